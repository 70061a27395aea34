"""What the pages read from query strings and form posts, checked by Django forms.

A value a page uses in a query or passes on to be stored goes through a form first (an id is a
whole number the database's key column can hold, a choice is one of its choices, text holds no NUL
character, which PostgreSQL cannot store); values only compared with a known list ("1", a filter
name) may be read as they are. ``read`` returns
the cleaned values or raises ``InvalidInput``, which the project's 400 handler
(``api.root_views.bad_request``) answers with a page naming each field and its problem; nothing
is changed.
"""
from __future__ import annotations

from django import forms
from django.core.exceptions import BadRequest

from annotator.models import DefectBookEntry, Image, Label, User
from annotator.services.defect_book import NOTE_MAX_LENGTH

# The database's 64-bit keys (BigAutoField): a larger number is no id, and an overflow in the driver.
MIN_ID, MAX_ID = -(2**63), 2**63 - 1


class InvalidInput(BadRequest):
    """A form of a page found bad values; ``problems`` is [(field label, message)]."""

    def __init__(self, form: forms.Form):
        self.problems = [
            (form.fields[name].label or name if name in form.fields else "form", message)
            for name, messages in form.errors.items() for message in messages
        ]
        super().__init__("; ".join(f"{field}: {message}" for field, message in self.problems))


def read(form_class: type[forms.Form], data) -> dict:
    """The cleaned values of ``data`` (a QueryDict) by ``form_class``; InvalidInput when bad."""
    form = form_class(data)
    if not form.is_valid():
        raise InvalidInput(form)
    return form.cleaned_data


class IdField(forms.IntegerField):
    def __init__(self, **kwargs):
        kwargs.setdefault("min_value", MIN_ID)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(**kwargs)


class IdListField(forms.Field):
    """Ids repeated (``?runs=1&runs=2``) and/or comma-separated (``?runs=1,2``)."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value):
        one = IdField()
        return [one.clean(part) for item in value or [] for part in str(item).split(",") if part.strip()]


class ModelsByIdField(forms.ModelMultipleChoiceField):
    """Django's ModelMultipleChoiceField, its values checked as ids before they are looked up (a
    number beyond the database's keys overflowed in the driver)."""

    def clean(self, value):
        if isinstance(value, (list, tuple)):
            one = IdField()
            for pk in value:
                try:
                    one.clean(pk)
                except forms.ValidationError:
                    raise forms.ValidationError(self.error_messages["invalid_pk_value"], code="invalid_pk_value",
                                                params={"pk": pk}) from None
        return super().clean(value)


# --- the labelling pages' query strings and posts ---------------------------------------------------

class ProductImagesQuery(forms.Form):
    split = forms.ChoiceField(choices=Image.Split.choices, required=False)
    defect_type = forms.CharField(label="defect type", required=False,
                                  max_length=Image._meta.get_field("defect_type").max_length)


class ProductQuery(forms.Form):
    product = IdField(required=False)


class DatasetQuery(forms.Form):
    dataset = IdField(required=False)


class ImageQuery(forms.Form):
    image = IdField(required=False)


class ReviewDecisionForm(forms.Form):
    image = IdField()
    background = forms.ChoiceField(choices=[("yes", "With background"), ("no", "Without background")])
    category = forms.ChoiceField(choices=Label.Category.choices)
    note = forms.CharField(required=False, strip=False)

    # A reviewer who left a choice open gets a message and the list again (not a 400 page).
    CHOICES = frozenset({"background", "category"})


class LabelImportForm(forms.Form):
    annotator = forms.CharField(required=False, max_length=User._meta.get_field("username").max_length)


class MaskSaveQuery(forms.Form):
    """What the mask editor says with the PNG it saves (in the query string; the body is the PNG)."""

    start = forms.ChoiceField(label="starting point", choices=[(s, s) for s in ("proposal", "mask", "empty")])
    revision = IdField(label="starting revision", required=False)
    changed = forms.TypedChoiceField(label="changed", choices=[("0", "no"), ("1", "yes")], coerce=lambda v: v == "1")
    note = forms.CharField(label="proposal", required=False, max_length=300)


class DefectBookPinForm(forms.Form):
    image = IdField()
    category = forms.ChoiceField(choices=Label.Category.choices)
    kind = forms.ChoiceField(choices=DefectBookEntry.Kind.choices)
    note = forms.CharField(required=False, max_length=NOTE_MAX_LENGTH)


class DefectBookUnpinForm(forms.Form):
    entry = IdField()
