"""The launch form: a Django ``Form`` whose model choice and engine settings come from the engine's
model registry (types, bounds, choices, defaults and help), so no list of models or settings lives here."""
from __future__ import annotations

from django import forms

from annotator.forms import IdField, IdListField, ModelsByIdField
from annotator.models import Dataset, Label, Product
from inference.engine import registry
from inference.engine.types import BenchmarkConfig
from inference.models import Deployment, InspectionJob, Technique

BACKGROUND_CHOICES = [("any", "Any"), ("yes", "With background"), ("no", "Without background")]


def setting_field(setting: registry.Setting) -> forms.Field:
    """A form field for one registry setting (blank = the engine's default)."""
    common = dict(label=setting.title, help_text=setting.help, required=False, initial=setting.default)
    if setting.kind is bool:
        return forms.TypedChoiceField(choices=[("true", "yes"), ("false", "no")], coerce=setting.clean,
                                      **{**common, "initial": "true" if setting.default else "false"})
    if setting.choices is not None:
        return forms.ChoiceField(choices=[(c, c) for c in setting.choices], **common)
    if setting.kind is int:
        return forms.IntegerField(min_value=setting.low, max_value=setting.high, **common)
    field = forms.FloatField(min_value=setting.low, max_value=setting.high, **common)
    field.widget.attrs["step"] = "any"
    return field


def setting_models(name: str) -> list[str]:
    """The models that read a setting; empty for the settings common to every model."""
    if name in registry.COMMON_SETTINGS:
        return []
    return [m.name for m in registry.MODELS.values() if name in m.settings]


class LaunchForm(forms.Form):
    dataset = forms.ModelChoiceField(queryset=Dataset.objects.order_by("name"), empty_label=None)
    products = ModelsByIdField(queryset=Product.objects.all(), required=False)
    categories = forms.MultipleChoiceField(choices=Label.Category.choices, required=False)
    background = forms.ChoiceField(choices=BACKGROUND_CHOICES, required=False, initial="any")
    # One run per ticked model, on the same images (their families side by side on the comparison page).
    models = forms.MultipleChoiceField(choices=registry.choices(), initial=[registry.DEFAULT_MODEL],
                                       widget=forms.CheckboxSelectMultiple)
    techniques = forms.MultipleChoiceField(choices=Technique.choices, required=False,
                                           initial=list(BenchmarkConfig().techniques))
    # checked by runs.clean_seed (range of the database column, whole numbers only)
    seed = forms.CharField(required=False, initial=BenchmarkConfig().seed)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for setting in registry.SETTINGS.values():
            self.fields[setting.name] = setting_field(setting)
        # Weights are never downloaded: offer only the backbones whose weights are on this server.
        from inference.services.runs import available_backbones

        self.fields["backbone"].choices = [(name, name) for name in available_backbones()]

    def setting_rows(self):
        """(bound field, space-separated model names or "") per setting, in registry order."""
        return [(self[name], " ".join(setting_models(name))) for name in registry.SETTINGS]

    def config(self) -> dict:
        """The settings that were filled in (after ``is_valid``); each run keeps its model's own."""
        return {k: v for k, v in self.cleaned_data.items() if k in registry.SETTINGS and v not in (None, "")}

    def selected(self, name: str):
        """The value to show as selected: the bound data, else the initial value."""
        if self.is_bound:
            return self.data.getlist(name) if hasattr(self.data, "getlist") and name in (
                "products", "categories", "techniques", "models") else self.data.get(name)
        return self.initial.get(name, self.fields[name].initial)


# --- the query strings and posts of the other benchmark and deploy pages ---------------------------

class LaunchQuery(forms.Form):
    """``/benchmarks/new/?dataset=1&product=2``: the launch form pre-filled."""

    dataset = IdField(required=False)
    product = IdListField(required=False)


class CompareQuery(forms.Form):
    runs = IdListField(required=False)


class DeployForm(forms.Form):
    run = IdField(required=False)
    technique = forms.CharField(required=False, max_length=Deployment._meta.get_field("technique").max_length)
    note = forms.CharField(required=False, max_length=Deployment._meta.get_field("note").max_length)


class BatchForm(forms.Form):
    folder = forms.CharField(required=False, max_length=InspectionJob._meta.get_field("source").max_length)


class TrailPeriodForm(forms.Form):
    """The period of a verdicts export: both days included, either open."""

    start = forms.DateField(label="From", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label="To", required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("start") and cleaned.get("end") and cleaned["start"] > cleaned["end"]:
            raise forms.ValidationError("The period's first day (From) comes after its last day (To).")
        return cleaned


class HistoryQuery(forms.Form):
    after = forms.CharField(label="page", required=False, max_length=100)

    def clean_after(self):
        from inference.services.trail import Cursor

        text = self.cleaned_data["after"]
        if not text:
            return None
        cursor = Cursor.decode(text)
        if cursor is None:
            raise forms.ValidationError("This is not a page of the history; start again from its first page.")
        return cursor
