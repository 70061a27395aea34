"""OpenAPI schema additions: the error responses every endpoint can give, documented once.

drf-spectacular documents what a view returns on success; errors come from DRF's exception
handling and look the same everywhere: ``{"detail": "..."}`` (401, 403, 404, 409, 429) or, for a
request that does not validate, an object of field name to list of messages (400).
"""
from drf_spectacular.utils import OpenApiExample  # noqa: F401 (re-exported for views)

DETAIL = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
    "additionalProperties": True,
}
FIELD_ERRORS = {
    "type": "object",
    "description": "Field name (or non_field_errors / detail) to the problems found; nothing was changed.",
    "additionalProperties": True,
}
ERRORS = {
    "400": ("The request does not validate; nothing was changed.", FIELD_ERRORS),
    "401": ("Not logged in (no session and no valid token).", DETAIL),
    "403": ("Logged in, but the role does not allow this.", DETAIL),
    "404": ("No such object (or not visible to this user), or no such page of a list.", DETAIL),
}
# Where the labelling rules refuse a valid request: the image has all the labels it needs.
CONFLICTS = {("/api/labels/", "post"), ("/api/labels/{id}/", "put"), ("/api/labels/{id}/", "patch")}
# Where a password is checked: too many failures from one address lock it out for a while.
LOCKOUTS = {("/api/auth/token/", "post")}


def add_error_responses(result, generator, request, public):
    """Postprocessing hook: add the error responses each operation can give unless declared."""
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            wanted = ["401", "403"]
            if method in ("post", "put", "patch") or operation.get("parameters"):
                wanted.append("400")
            # Objects named in the path or query, and pages of a list (?page= past the end: "Invalid page.").
            if "{" in path or any(p.get("in") == "query" and p.get("name") in ("dataset", "image", "page")
                                  for p in operation.get("parameters", [])):
                wanted.append("404")
            for code in wanted:
                if code not in operation["responses"]:
                    description, schema = ERRORS[code]
                    operation["responses"][code] = {
                        "description": description, "content": {"application/json": {"schema": schema}},
                    }
            if (path, method) in CONFLICTS and "409" not in operation["responses"]:
                operation["responses"]["409"] = {
                    "description": "The image already has all the labels its overlap asks for.",
                    "content": {"application/json": {"schema": DETAIL}},
                }
            if (path, method) in LOCKOUTS and "429" not in operation["responses"]:
                operation["responses"]["429"] = {
                    "description": "Too many failed logins from this address; the Retry-After header "
                                   "and the detail say when to try again.",
                    "content": {"application/json": {"schema": DETAIL}},
                }
    return result
