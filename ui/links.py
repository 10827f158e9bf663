"""Links and navigation: the page's settings in the address (read, checked, refused with a message, written back), the
run in the link, values kept across pages, and user text shown as text."""

from __future__ import annotations

import math
from pathlib import Path

import streamlit as st
from streamlit.runtime.state.session_state_proxy import get_session_state

from core.engine.registry import ATTACKS, THREATS, stored_knobs
from core.experiments.run import run_choices
from ui.data import app_dir, shown

# Session state that is not a widget a link may set (a link's ?threshold=-1 or ?run_picker=/etc stayed in the address)
NOT_LINKABLE = {
    "threshold",
    "threshold_run",
    "threshold_score",
    "run_dir",
    "run_picker",
    "link",
    "link_pending",
    "kept_uploads",
}


def custom_stored_knobs() -> dict:
    """The stored knobs (core.engine.registry.Knob.stored_as) of the threats crafted on a surrogate, which the Poison
    page's Custom preset sets (TAP's craft_augment and smooth_scale, unlearnable's noise_scope): link parameter -> Knob.
    Their widgets bind to the link under the stored name (ui.widgets.knob_widgets), and the knob says what it takes."""
    surrogate_threats = {spec.name for spec in THREATS.specs() if spec.needs_surrogate}
    return {name: knob for name, (entry, knob) in stored_knobs(THREATS).items() if entry in surrogate_threats}


CUSTOM_KNOBS = ("attack", "eps", "alpha", "steps", "fraction", "poison_seed", *custom_stored_knobs())


CUSTOM_KNOB_PAGE = "poison"  # the page whose widgets these are


# The Poison page's ranges of its numeric Custom knobs (its widgets read them here): a link value outside one is
# refused, and does not switch the preset to Custom (fraction=2 and steps=1e9 did).
CUSTOM_KNOB_RANGES = {
    "eps": (0.0, 0.1),
    "alpha": (0.0, 0.05),
    "steps": (1, 100),
    "fraction": (0.0, 1.0),
    "poison_seed": (0, 10_000),
}


def _knob_value_ok(knob: str, raw: str) -> bool:
    """Whether a link's value for a Custom-only knob is one its widget can take (eps=lots is not)."""
    if knob == "attack":
        return raw in ATTACKS.names() or raw in {ATTACKS.label(name) for name in ATTACKS.names()}
    if knob in custom_stored_knobs():
        return link_value(custom_stored_knobs()[knob], raw) is not None
    try:
        value = float(raw)
    except ValueError:
        return False
    if not math.isfinite(value):  # inf, nan, 1e400: int(inf) raised OverflowError here (issue 34)
        return False
    low, high = CUSTOM_KNOB_RANGES[knob]
    return low <= value <= high and (knob not in ("steps", "poison_seed") or value == int(value))


def link_value(knob, raw: str):
    """A link's text as a value the knob takes (true / false, a whole number, a number, a word), or None."""
    try:
        if knob.kind is bool:
            return {"true": True, "false": False}[raw.lower()]
        return knob.check(float(raw) if knob.kind in (int, float) else raw, knob.name)
    except (KeyError, ValueError, OverflowError):
        return None


def _is_number(raw: str) -> bool:
    try:
        float(raw)
    except ValueError:
        return False
    return True


def not_finite(raw: str) -> bool:
    """A link value that reads as a number but not a finite one (inf, -inf, nan, 1e400): no widget can take it."""
    try:
        return not math.isfinite(float(raw))
    except ValueError:
        return False


def open_link(page: str = "") -> None:
    """On a session's first run, keep the link it was opened with (to report what it could not use) and let a valid
    Custom-only knob in a link to the Poison page (poison?eps=0.05) switch the preset to Custom: Paper and Quick would
    show it but not use it. A value the knob cannot take, or the knob on another page's link, changes nothing."""
    if "link" in st.session_state:
        return
    link = st.query_params.to_dict()
    # Non-finite numbers leave the address before any widget reads them (Streamlit's own parsing of inf raised
    # OverflowError, and deleting a parameter bound to a widget raised StreamlitAPIException): said in a toast.
    refused = {key: raw for key, raw in link.items() if not_finite(raw)}
    for key in refused:
        st.query_params.pop(key, None)
        forget_initial_link_value(key)
    st.session_state["link_refused"] = refused
    link = {key: raw for key, raw in link.items() if key not in refused}
    if "run" in link:
        open_run_link(link["run"])
    st.session_state["link"] = link
    st.session_state["link_pending"] = True
    if page != CUSTOM_KNOB_PAGE:
        return
    linked = {
        key: knob for key in link for knob in CUSTOM_KNOBS if key == knob or key.startswith(f"{knob}_")
    }  # steps_tap is TAP's steps
    custom = [key for key, knob in linked.items() if _knob_value_ok(knob, link[key])]
    preset_named = link.get("preset")
    if preset_named is None and custom:
        st.session_state["preset"] = "Custom"
        st.toast(f"The link sets {', '.join(custom)}: preset Custom, so the page uses them.")
        return
    if preset_named == "Custom":
        return  # each widget takes its value or corrects it, and says so (report_link)
    # Under a fixed preset the page uses the preset's values: a disabled slider showing the link's eps 0.05 while the
    # page used 0.01, or fraction=2 switching the preset to Custom, misled (issue 34). Refused, said why.
    for key, knob in linked.items():
        if key in custom:
            why = f"the preset {preset_named} fixes it; pick Custom to set it"
        elif knob in CUSTOM_KNOB_RANGES and not _is_number(link[key]):
            why = "not a number"
        elif knob in CUSTOM_KNOB_RANGES:
            low, high = CUSTOM_KNOB_RANGES[knob]
            why = f"outside {knob}'s range {low:g} to {high:g}" + (" in whole steps" if isinstance(low, int) else "")
        else:
            why = f"not a value {knob} can take"
        st.query_params.pop(key, None)
        forget_initial_link_value(key)
        st.session_state["link_refused"][key] = (link[key], why)


def link_names(key: str, options, format_func) -> None:
    """Let a link name a choice by its registry name (?score=magnet, ?threat=tap, ?upload_attack=ifgsm) as well as by
    the label the widget shows: called before the widget, it turns the name into the label Streamlit's binding reads
    (the binding writes labels, so the app's own links keep them)."""
    if key in st.session_state or key not in st.query_params:
        return
    raw = st.query_params[key]
    option = next((option for option in options if str(option).lower() == raw.lower()), None)
    if option is None or format_func(option) == raw:
        return
    label = format_func(option)

    with get_session_state().query_params() as params:
        if key in getattr(params, "_initial_query_params", {}):
            params._initial_query_params[key] = [label]
        if key in getattr(params, "_query_params", {}):
            params._query_params[key] = label
    st.session_state.setdefault("link", {})[key] = label  # what the widget now shows: nothing to report


def forget_initial_link_value(key: str) -> None:
    """Streamlit seeds a bound widget from the query string the session opened with, not from st.query_params: the
    refused value is removed there too (Streamlit 1.67's QueryParams._initial_query_params; nothing public does it)."""
    with get_session_state().query_params() as params:
        getattr(params, "_initial_query_params", {}).pop(key, None)


def _shown_value(value) -> str:
    """A value as a toast shows it: floats to 4 significant digits (not 0.050000000000000003)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:.4g}" if "." in str(value) or "e" in str(value).lower() else str(value)


def _same(state, raw: str) -> bool:
    """Whether a widget's value is what the URL said (Streamlit drops values equal to the default from the URL)."""
    if isinstance(state, bool):
        return raw.lower() == str(state).lower()
    if isinstance(state, (int, float)):
        try:
            return abs(float(raw) - float(state)) <= 1e-9 * max(1.0, abs(float(state)))
        except ValueError:
            return False
    return str(state) == raw


def report_link() -> None:
    """After the first run of a session: one toast per link value the page did not use, and why."""
    if not st.session_state.pop("link_pending", False):
        return
    ignored = {
        key: refused if isinstance(refused, tuple) else (refused, "not a finite number")
        for key, refused in st.session_state.pop("link_refused", {}).items()
    }
    for key, raw in st.session_state.get("link", {}).items():
        if key == "run" or key in ignored:  # the run: the sidebar's, said by open_run_link
            continue
        if key in NOT_LINKABLE:  # the session's own state, not a widget: a link cannot set it
            ignored[key] = (raw, "not a setting a link can change")
            st.query_params.pop(key, None)
            continue
        # Streamlit keeps a valid value (a choice as its label), corrects or drops the others
        now = st.query_params.get(key)
        if key not in st.session_state:  # no widget of this page took it (the address may still hold it)
            ignored[key] = (raw, "not a setting of this page")
            st.query_params.pop(key, None)  # said once, then gone from the address bar
        elif now == raw or _same(st.session_state[key], raw):
            continue
        elif now is not None:
            ignored[key] = (raw, f"corrected to {_shown_value(now)}")
        else:
            ignored[key] = (raw, f"not a valid value here; showing {_shown_value(st.session_state[key])}")
    for key, (raw, why) in ignored.items():
        # a toast renders Markdown: the link's own text is escaped, shown as typed
        st.toast(f"Ignored the link's {as_text(key)}={as_text(raw[:40])}: {why}.", icon=":material/link_off:")


MARKDOWN_SPECIALS = set("\\`*_[]$<>~|!")  # what renders inline: emphasis, code, links, images, KaTeX, HTML, tables


def as_text(text) -> str:
    """User text (a file name, a link value) for a Markdown element, every Markdown, KaTeX and HTML character escaped:
    shown as typed, never rendered (issue 34: a file name made bold text, a link and KaTeX)."""
    return "".join("\\" + char if char in MARKDOWN_SPECIALS else char for char in str(text))


def run_link_value(directory: str) -> str:
    """How a run is written in a link: its shown name (checkpoints/paper, app/runs/quick-ifgsm-eps0.01-seed0-1a2b3c)."""
    return shown(directory)


def open_run_link(value: str) -> None:
    """A link's ?run=: one of the runs the picker lists, by its shown name; anything else is said and ignored."""
    choices = run_choices(app_dir() / "runs", Path("runs"))
    found = next((path for path in choices if run_link_value(path) == value), None)
    if found is None:
        st.toast(f"Ignored the link's run={as_text(value[:60])}: no such run here.", icon=":material/link_off:")
        return
    st.session_state["run_dir"] = found


def kept(key: str, default: int | float | str) -> int | float | str:
    """A widget's value kept for the session: Streamlit drops a widget's state when a page does not draw it, so a
    visit to another page reset it (the Autoencoder's epochs went back to 20). Pass as the widget's value, with
    on_change=keep, args=(key,)."""
    return st.session_state.get(f"kept_{key}", default)


def keep(key: str) -> None:
    st.session_state[f"kept_{key}"] = st.session_state[key]
