"""The API's JSON parser: DRF's, refusing at the door what no field could use.

* Nesting deeper than ``MAX_DEPTH`` (no request of this API nests more than a few levels; 5 000
  levels made Python's decoder raise RecursionError, a server error) is a ParseError.
* Text that is not Unicode (a lone surrogate such as ``"\\ud800"``, which JSON's escapes allow)
  is a 400 naming the field: it can be neither stored nor echoed in an error message (UTF-8 cannot
  encode it, so rendering the usual "not a valid choice" failed).

Form and multipart bodies need no such check: Django decodes them as UTF-8 and replaces what is
not, so no lone surrogate comes out of them.
"""
from rest_framework import parsers
from rest_framework.exceptions import ParseError, ValidationError

MAX_DEPTH = 32


def _surrogate(text: str) -> str | None:
    """The first lone surrogate of ``text`` as ``U+D800``, or None."""
    for char in text:
        if "\ud800" <= char <= "\udfff":
            return f"U+{ord(char):04X}"
    return None


def check_parsed(data) -> None:
    """ParseError when ``data`` nests deeper than MAX_DEPTH, ValidationError (naming the top-level
    field) when a key or string in it holds a lone surrogate. Iterative: deep data cannot recurse."""
    stack = [(data, 0, None)]
    while stack:
        value, depth, field = stack.pop()
        if depth > MAX_DEPTH:
            raise ParseError(f"JSON parse error - nested more than {MAX_DEPTH} levels deep.")
        if isinstance(value, str):
            if (code := _surrogate(value)) is not None:
                raise ValidationError({field or "non_field_errors": [
                    f"Not valid Unicode text: a lone surrogate character ({code})."]})
        elif isinstance(value, dict):
            for key, item in value.items():
                name = field or key
                if (code := _surrogate(key)) is not None:
                    raise ValidationError({"non_field_errors": [
                        f"A field name is not valid Unicode text: a lone surrogate character ({code})."]})
                stack.append((item, depth + 1, name))
        elif isinstance(value, list):
            stack.extend((item, depth + 1, field) for item in value)


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON parse error - nested more than {MAX_DEPTH} levels deep.") from None
        check_parsed(data)
        return data
