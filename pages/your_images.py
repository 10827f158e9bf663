"""Your images: upload images (or pick GTSRB test images), see both models and the DAE, then attack them."""

from ui.navigation import ensure_navigation

ensure_navigation()  # first: a deep link on a fresh server goes through app.py before the engine loads

import pandas as pd
import streamlit as st

from core.engine.data import CLASS_NAMES
from core.engine.registry import ATTACKS
from core.reporting import explore
from core.reporting.images import ACCEPTED_FORMATS, UploadError
from core.reporting.sign_examples import shipped_examples
from ui.data import cached_run, image_analysis, image_models, run_dir, test_image, uploaded_image
from ui.links import as_text, link_names
from ui.widgets import enlarged, guard, session_threshold

st.title("Your images")
run = models = None
with guard("loading the models"):
    run = cached_run(run_dir())
    models = image_models(run_dir())
if run is None or models is None:
    st.stop()  # the guard has said which file failed
residual_model = models["residual"]
# The Threshold page's threshold applies to the DAE only while the DAE score is selected there.
dae_selected = st.session_state.get("score", "dae") == "dae"
threshold = session_threshold(run) if dae_selected else run.threshold
st.caption(
    f"Student: `filter_distillation`; baseline: `undefended`. DAE verdict at the threshold {threshold:.5f} "
    "(set it on the Threshold page)"
    + (
        f"; noise-residual detector verdict at the run's threshold {run.threshold_of('supervised'):.3f}."
        if residual_model
        else "."
    )
)

st.caption(
    "An image from elsewhere (a photo, a drawing) is off the distribution the models and the DAE learned: the filter "
    "drops most of them (a large reconstruction error says *unlike GTSRB*, not *poisoned*), and a student distilled at "
    "high T gives near-certain softmax outputs even when wrong. Read the MC-dropout verdict beside its top-5."
)
uploads = st.file_uploader(
    f"Upload images ({ACCEPTED_FORMATS})",
    type=["png", "jpg", "jpeg", "ppm", "webp", "tif", "tiff", "bmp", "gif"],
    accept_multiple_files=True,
    help="Any size: large photos are downscaled. A non-square image is centre-cropped to a square before it is "
    "scaled to 32x32 (GTSRB's crops centre the sign), so frame the sign in the middle.",
)
examples = shipped_examples()
drawn = st.multiselect(
    "...or drawn road signs (made for this project, not GTSRB and not photos: a domain shift)",
    list(examples),
    format_func=lambda name: f"{name} (true class: {examples[name][1]})",
    key="drawn_signs",
)
picked = st.multiselect(
    "...or pick GTSRB test images by index", list(range(0, 12630, 97)), default=[] if uploads or drawn else [0]
)

images, names = [], []
# Kept for the session: a visit to another page clears the uploader, not what was uploaded (issue 34)
kept_uploads = st.session_state.setdefault("kept_uploads", {})
for upload in uploads or []:
    kept_uploads[upload.name] = upload.getvalue()
if kept_uploads and not uploads:
    st.caption(f"Showing the {len(kept_uploads)} image(s) uploaded earlier in this session.")
    if st.button("Forget the uploaded images", key="forget_uploads"):
        kept_uploads.clear()
        st.rerun()
files = [(name, lambda data=data: data) for name, data in kept_uploads.items()]
files += [(f"{name}.png (drawn; true class {examples[name][1]})", examples[name][0].read_bytes) for name in drawn]
for name, read in files:
    try:
        images.append(uploaded_image(read(), name))  # the same path for uploads and the drawn examples
        names.append(name)
    except UploadError as error:
        st.error(as_text(error))
with guard("loading the test images"):
    for index in picked:
        if (found := test_image(run_dir(), index)) is not None:
            images.append(found[0])
            names.append(f"test #{index} ({CLASS_NAMES[found[1]]})")

st.subheader("Attack")
c1, c2, c3, c4 = st.columns(4)
attack_label = lambda a: ATTACKS.label(a) if a != "none" else "no attack"  # noqa: E731
link_names("upload_attack", ["none", *ATTACKS.names()], attack_label)
attack = c1.selectbox(
    "attack",
    ["none", *ATTACKS.names()],
    format_func=attack_label,
    key="upload_attack",
    bind="query-params",
)
eps = c2.slider("eps", 0.0, 0.1, 0.01, 0.001, format="%.3f", key="upload_eps", bind="query-params")
alpha = c3.slider("alpha", 0.0, 0.05, 0.01, 0.001, format="%.3f", key="upload_alpha", bind="query-params")
steps = c4.slider("steps", 1, 50, 10, key="upload_steps", bind="query-params")
target = st.radio(
    "attack crafted on", ["student", "undefended"], horizontal=True, key="upload_target", bind="query-params"
)


def top_table(top: list[tuple[str, float]]) -> pd.DataFrame:
    return pd.DataFrame({"class": [name for name, _ in top], "p": [explore.format_probability(p) for _, p in top]})


def draw(view: dict, label: str) -> None:
    """One row: the image the model saw, the DAE's reconstruction, error map and verdict, both models' top-5."""
    cols = st.columns([1, 1, 1.3, 2, 2])
    cols[0].image(enlarged(view["image"]), caption=label, output_format="PNG")
    cols[1].image(enlarged(view["reconstruction"]), caption="DAE reconstruction", output_format="PNG")
    cols[2].image(
        enlarged(view["error_map"]), caption=f"error map (blue 0, red {view['error_scale']:.2g}+)", output_format="PNG"
    )
    verdict = "off the training distribution: the filter would drop it" if view["dae_dropped"] else "kept by the filter"
    cols[2].markdown(f"MSE **{view['mse']:.5f}**: {verdict}")
    if "residual" in view:
        cols[2].markdown(
            f"noise residual **{view['residual']:.2f}**: "
            f"{'looks perturbed (poison-like)' if view['residual_flagged'] else 'no perturbation found (clean-like)'}"
        )
    cols[3].markdown("**student** top-5")
    cols[3].table(top_table(view["student_top"]))  # static: no cut-off columns, no grid left from the last upload
    if "abstain" in view:
        cols[3].markdown(
            f"MC dropout: **{'abstains' if view['abstain'] else 'answers'}** "
            f"({view['mc_class']}, mean {explore.format_probability(view['mc_probability'])}; "
            f"disagreement {view['disagreement']:.2g} against the cut-off {view['abstention_cutoff']:.2g}, set at "
            f"{view['abstention_fpr']:.0%} false abstentions on trusted clean images)",
            help="A student distilled at high T says 0.9998 for almost anything; whether its dropout passes agree is "
            "the honest confidence (`python -m core abstain`).",
        )
    cols[4].markdown("**undefended** top-5")
    cols[4].table(top_table(view["undefended_top"]))


attack_settings = None if attack == "none" else dict(name=attack, eps=eps, alpha=alpha, steps=steps, target=target)
for image, name in zip(images, names):
    with guard(f"analysing {as_text(name)}"):
        st.markdown(f"#### {as_text(name)}")
        rows = image_analysis(run_dir(), image, threshold, attack_settings)
        draw(rows[0], "what the models see (32x32)")
        if attack_settings is not None:
            objective = ", margin (Carlini-Wagner) loss" if explore.attack_takes_loss(attack) else ""
            draw(rows[1], f"{ATTACKS.label(attack)} eps {eps} on the {target}{objective}")
