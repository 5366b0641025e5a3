"""What every service accepts as input, decided once (issue 18).

``ApiBlueprint.operation`` (shared/http.py) runs every JSON body and query string through
this module before a view sees it:

- **JSON** is parsed strictly: UTF-8 only, no duplicate keys (``{"a": 1, "a": 2}`` would
  otherwise keep the last one silently), no ``NaN``/``Infinity``, and at most
  ``MAX_DEPTH`` levels of nesting (100,000 ``[`` must answer 422, never ``RecursionError``).
- **Text** is one rule everywhere: no lone surrogates (they cannot be stored, encrypted or
  hashed as UTF-8), no NUL or other C0 control characters, no bidirectional overrides or
  isolates (U+202A-U+202E, U+2066-U+2069: they make a name display as something else).
  Line breaks and tabs are allowed only in fields declared ``multiline(...)``; every other
  string schema gets a ``pattern`` that says so, so the OpenAPI document shows the rule the
  server applies.  Strings that already carry their own ``pattern`` (codes, slugs, ids) keep
  it; the universal rule is still checked on them.
- **Integral numbers** are integers: ``3.0`` is a valid JSON Schema ``integer`` (JSON has one
  number type), so the parser reads it as ``3``; the domain would otherwise store ``"3.0"`` and
  fail to read it back.  A field declared ``integer`` then only ever sees a Python ``int``.

Every problem is reported as an ``Invalid`` (422) with field-level ``errors``; messages
describe the rule and never echo the submitted value.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, overload

from jsonschema import Draft202012Validator, TypeChecker, validators
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator as SchemaValidator

if TYPE_CHECKING:
    from werkzeug.datastructures import MultiDict

from .errors import Invalid
from .normalise import EMAIL_FORBIDDEN

MAX_DEPTH = 32

# The characters no text field accepts: C0 controls except TAB/LF/CR, and the bidi controls.
_BIDI = "\u202a-\u202e\u2066-\u2069"
_FORBIDDEN = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f{_BIDI}]")
_LINE_BREAKS = re.compile("[\t\n\r]")
_SURROGATE = re.compile("[\ud800-\udfff]")

# The same rules as JSON Schema (ECMA-262) patterns, for the declared schemas.
SINGLE_LINE = "^[^\\u0000-\\u001f\\u202a-\\u202e\\u2066-\\u2069]*$"
MULTILINE = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u202a-\\u202e\\u2066-\\u2069]*$"
TEXT_PATTERNS = frozenset({SINGLE_LINE, MULTILINE})
_MULTILINE_MARK = "x-multiline"


def multiline(schema: dict[str, Any]) -> dict[str, Any]:
    """Mark a string schema as accepting line breaks and tabs (a description, a notice body)."""
    return {**schema, _MULTILINE_MARK: True}


def text_problem(value: str, *, multiline_allowed: bool = True) -> str | None:
    """Why ``value`` is not acceptable text, or None.  Never quotes the value."""
    if _SURROGATE.search(value):
        return "contains an unpaired surrogate (not valid Unicode text)"
    if _FORBIDDEN.search(value):
        return "contains a control character or a bidirectional override"
    if not multiline_allowed and _LINE_BREAKS.search(value):
        return "must be a single line (no line breaks or tabs)"
    return None


def acceptable_path_value(value: str) -> bool:
    """A path parameter that could name something: ids never hold control or bidi characters."""
    return text_problem(value, multiline_allowed=False) is None


# --- JSON --------------------------------------------------------------------------------------


class _Duplicate(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Duplicate(key)
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _number(text: str) -> float | int:
    # 3.0 and 3 are the same JSON number; an integral one is read as an int (exactly, up to 2**53).
    value = float(text)
    return int(value) if value.is_integer() and abs(value) <= 2**53 else value


def _body_error(message: str, detail: str, field: str = "body") -> Invalid:
    return Invalid(detail, errors=[{"field": field, "message": message}])


def parse_json(data: bytes) -> Any:
    """The JSON document in ``data`` under the rules above; ``Invalid`` otherwise."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _body_error("is not UTF-8", "the request body is not valid JSON (not UTF-8)") from None
    try:
        document = json.loads(text, object_pairs_hook=_pairs, parse_constant=_no_constant, parse_float=_number)
    except _Duplicate as exc:
        raise _body_error(
            "has a duplicate key", "the request body repeats a key in one object", field=_key_name(exc.key)
        ) from None
    except RecursionError:
        raise _nesting_error() from None
    except ValueError:
        raise _body_error("is not valid JSON", "the request body is not valid JSON") from None
    check_document(document)
    return document


def _nesting_error() -> Invalid:
    return _body_error(
        f"is nested more than {MAX_DEPTH} levels deep", f"the request body is nested more than {MAX_DEPTH} levels deep"
    )


def _key_name(key: str) -> str:
    # A key is a field name; one that is not an identifier is not echoed.
    return key if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]{0,63}", key) else "body"


def check_document(document: Any) -> None:
    """Depth and the universal text rule over a parsed document, iteratively (no recursion)."""
    problems: list[dict[str, str]] = []
    stack: list[tuple[Any, tuple[str, ...]]] = [(document, ())]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_DEPTH:
            raise _nesting_error()
        if isinstance(value, str):
            message = text_problem(value)
            if message:
                problems.append({"field": ".".join(path) or "body", "message": message})
        elif isinstance(value, dict):
            for key, item in value.items():
                message = text_problem(key, multiline_allowed=False)
                if message:
                    problems.append({"field": ".".join(path) or "body", "message": "has a field name that " + message})
                    continue
                stack.append((item, (*path, key)))
        elif isinstance(value, list):
            stack.extend((item, (*path, str(i))) for i, item in enumerate(value))
    if problems:
        problems.sort(key=lambda p: p["field"])
        raise Invalid(f"the request has {len(problems)} invalid field(s)", errors=problems)


# --- query strings -----------------------------------------------------------------------------


def query_parameters(args: MultiDict[str, str]) -> dict[str, str]:
    """One value per parameter (a repeated one is ambiguous: 422), under the text rule."""
    problems: list[dict[str, str]] = []
    params: dict[str, str] = {}
    for key in args:
        values = args.getlist(key)
        name = key if text_problem(key, multiline_allowed=False) is None else "query"
        if len(values) > 1:
            problems.append({"field": _key_name(name), "message": "is given more than once"})
            continue
        message = text_problem(values[0], multiline_allowed=False)
        if message:
            problems.append({"field": _key_name(name), "message": message})
            continue
        params[key] = values[0]
    if problems:
        raise Invalid("the query parameters are invalid", errors=problems)
    return params


# --- schemas -----------------------------------------------------------------------------------


def _is_int(_checker: TypeChecker, instance: Any) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


def _single_line(
    validator: SchemaValidator, mark: bool, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    # ``x-multiline: false`` (written by ``harden``): no line break, whatever the pattern says.
    if not mark and isinstance(instance, str) and _LINE_BREAKS.search(instance):
        yield ValidationError("must be a single line", validator="x-multiline", validator_value=mark)


# ``extend`` builds a new class that follows jsonschema's Validator protocol (not a subclass).
Validator: type[SchemaValidator] = validators.extend(
    Draft202012Validator,
    validators={_MULTILINE_MARK: _single_line},
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_int),
)


def _allows_string(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    return kind == "string" or (isinstance(kind, list) and "string" in kind)


@overload
def harden(schema: dict[str, Any]) -> dict[str, Any]: ...
@overload
def harden(schema: None) -> None: ...
@overload
def harden(schema: dict[str, Any] | None) -> dict[str, Any] | None: ...
def harden(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """A copy of ``schema`` in which every string field states the text rule.

    A string without a ``pattern`` gets ``SINGLE_LINE`` (or ``MULTILINE`` when marked), and
    every string states ``x-multiline``: the validator refuses a line break where it is false
    (needed besides the pattern, since Python's ``$`` matches before a final newline, and a
    field's own pattern is kept).  The result both validates and is published in
    ``/openapi.json``.
    """
    if schema is None:
        return None
    schema = copy.deepcopy(schema)
    stack: list[dict[str, Any] | list[Any]] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(n for n in node if isinstance(n, (dict, list)))
            continue
        if not isinstance(node, dict):
            continue
        if _allows_string(node):
            allowed = bool(node.get(_MULTILINE_MARK))
            node[_MULTILINE_MARK] = allowed
            node.setdefault("pattern", MULTILINE if allowed else SINGLE_LINE)
        for key, child in node.items():
            if key in ("properties", "patternProperties", "$defs"):
                stack.extend(c for c in child.values() if isinstance(c, dict))
            elif key in (
                "items",
                "additionalProperties",
                "not",
                "contains",
                "propertyNames",
                "if",
                "then",
                "else",
                "anyOf",
                "oneOf",
                "allOf",
                "prefixItems",
            ):
                if isinstance(child, (dict, list)):
                    stack.append(child)
    return schema


# --- formats the domain checks, stated in the schemas -------------------------------------------------
# The blind-index normalisers (shared.normalise: normalise_email, normalise_phone,
# normalise_personnummer) decide; these patterns publish the same shape so a generated or
# hand-written client sees the rule.  What a pattern cannot say (the personnummer's check digit
# and date) stays the normaliser's 422, and the description says so.

# Surrounding spaces are allowed: the normalisers strip them.  An address holds no white space,
# control, format, surrogate or private-use character (normalise.EMAIL_FORBIDDEN), one "@", a
# local part of at most 64 characters without "..", a leading or a trailing ".", and at least
# two domain labels that neither start nor end with "-".
_NOT_IN_ADDRESS = f"\\s@{EMAIL_FORBIDDEN}"
_LABEL = rf"[^{_NOT_IN_ADDRESS}.\-](?:[^{_NOT_IN_ADDRESS}.]*[^{_NOT_IN_ADDRESS}.\-])?"
EMAIL = {
    "type": "string",
    "maxLength": 254,
    "pattern": rf"^ *(?!.*\.\.)[^{_NOT_IN_ADDRESS}.](?:[^{_NOT_IN_ADDRESS}]{{0,62}}[^{_NOT_IN_ADDRESS}.])?"
    rf"@{_LABEL}(?:\.{_LABEL})+ *$",
}
# The digits the normaliser keeps (7-15, the first not 0): "+" or "00" and the number, a national
# "0" and the number after it (the country code is added: 5-13 digits), or bare digits.
_SEP = r"[ ./()\-]{0,3}"
PHONE = {
    "type": "string",
    "maxLength": 40,
    "pattern": rf"^{_SEP}(?:(?:\+|0{_SEP}0){_SEP}[1-9](?:{_SEP}[0-9]){{6,14}}|0{_SEP}[1-9](?:{_SEP}[0-9]){{4,12}}"
    rf"|[1-9](?:{_SEP}[0-9]){{6,14}}){_SEP}$",
    "description": "7-15 digits (a national number from 0 gets the country code); up to three spaces, '-', '.', "
    "'/' or parentheses between them are ignored",
}
PERSONNUMMER = {
    "type": "string",
    "minLength": 10,
    "maxLength": 20,
    "pattern": r"^ *(?:[0-9]{2})?[0-9]{6}[-+]?[0-9]{4} *$",
    "description": "YYYYMMDD-NNNN, YYYYMMDDNNNN, YYMMDD-NNNN or YYMMDD+NNNN; the date and the check "
    "digit are verified too (422)",
}


class FromSetting:
    """A value of a declared schema that follows a setting of the service (``minLength``: the
    configured shortest password), so the published document states the rule the server applies.

    ``resolve`` puts the setting's value in; ``create_service_app`` does it for each app, from its
    configuration, both for validation and for ``/openapi.json``.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"FromSetting({self.name!r})"

    def __deepcopy__(self, memo: dict[int, Any]) -> FromSetting:
        return self


def has_settings(schema: Any) -> bool:
    """Whether ``schema`` holds a ``FromSetting`` anywhere."""
    if isinstance(schema, FromSetting):
        return True
    if isinstance(schema, dict):
        return any(has_settings(v) for v in schema.values())
    if isinstance(schema, list):
        return any(has_settings(v) for v in schema)
    return False


def resolve(schema: Any, settings: Any) -> Any:
    """``schema`` with every ``FromSetting`` replaced by ``settings[name]``."""
    if isinstance(schema, FromSetting):
        if settings is None:
            raise TypeError(f"the schema needs the setting {schema.name}; create the app with its settings")
        return settings[schema.name]
    if isinstance(schema, dict):
        return {k: resolve(v, settings) for k, v in schema.items()}
    if isinstance(schema, list):
        return [resolve(v, settings) for v in schema]
    return schema


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema``, or null."""
    return {**schema, "type": [schema["type"], "null"]}
