"""Names the client sent that the API does not know, with the close match: a 422 for a
top-level field (`schemas._Strict`); for a deal key (`request.score_request`), a per-deal
warning, or a 422 under the strict setting (`LEADSCORE_STRICT_KEYS=1`)."""
from __future__ import annotations

from difflib import get_close_matches
from typing import Collection


def unknown_key_message(name: str, known: Collection[str]) -> str:
    """"unknown field 'asof'; did you mean 'as_of'?" (or the known names when nothing is close)."""
    close = get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    return (f"unknown field '{name}'; did you mean '{close[0]}'?" if close
            else f"unknown field '{name}'; known fields: {', '.join(sorted(known))}")


def unknown_deal_keys(deals: list[dict], known: set[str]) -> dict[int, list[str]]:
    """{deal position: ["industy"]}: the keys outside `known` (the deal fields and the
    model's attributes), sorted, for the deals that have any."""
    if not set().union(*map(dict.keys, deals)) - known:  # the usual case, checked at C speed
        return {}
    return {i: sorted(deal.keys() - known) for i, deal in enumerate(deals) if deal.keys() - known}


def unknown_key_warnings(unknown: dict[int, list[str]], known: set[str]) -> dict[int, list[str]]:
    """{0: ["unknown field 'industy'; did you mean 'industry'? (ignored)"]}: the per-deal
    warnings of the default (lenient) setting."""
    return {i: [f"{unknown_key_message(k, known)} (ignored)" for k in keys] for i, keys in unknown.items()}


def unknown_key_errors(unknown: dict[int, list[str]], known: set[str]) -> list[dict]:
    """[{"field": "deals[0].industy", "message": "unknown field 'industy'; did you mean
    'industry'?"}]: the field errors of the strict setting (LEADSCORE_STRICT_KEYS=1)."""
    return [{"field": f"deals[{i}].{k}", "message": unknown_key_message(k, known)}
            for i, keys in unknown.items() for k in keys]
