"""Your images: upload images (or pick GTSRB test images), see both models and the DAE, then attack them."""

import pandas as pd
import streamlit as st

from core import explore
from core.data import CLASS_NAMES
from core.registry import ATTACKS
from ui.common import (
    cached_autoencoder,
    cached_classifier,
    cached_run,
    cached_supervised_detector,
    enlarged,
    ensure_navigation,
    guard,
    run_dir,
    run_splits,
)

ensure_navigation()

st.title("Your images")
run = None
with guard("loading the models"):
    run = cached_run(run_dir())
    student = cached_classifier(run_dir(), "filter_distillation")
    undefended = cached_classifier(run_dir(), "undefended")
    autoencoder = cached_autoencoder(run_dir())
    residual_model = cached_supervised_detector(run_dir())
if run is None:
    st.stop()
# The Threshold page's threshold applies to the DAE only while the DAE score is selected there.
dae_selected = st.session_state.get("score", "dae") == "dae"
threshold = float(st.session_state.get("threshold", run.threshold)) if dae_selected else run.threshold
st.caption(
    f"Student: `filter_distillation`; baseline: `undefended`. DAE verdict at the threshold {threshold:.5f} "
    "(set it on the Threshold page)"
    + (
        f"; noise-residual detector verdict at the run's threshold {run.threshold_of('supervised'):.3f}."
        if residual_model
        else "."
    )
)

uploads = st.file_uploader(
    "Upload images (PNG, JPEG, PPM, WebP)", type=["png", "jpg", "jpeg", "ppm", "webp"], accept_multiple_files=True
)
picked = st.multiselect(
    "...or pick GTSRB test images by index", list(range(0, 12630, 97)), default=[] if uploads else [0]
)

images, names = [], []
for upload in uploads or []:
    try:
        images.append(explore.read_upload(upload.getvalue(), upload.name))
        names.append(upload.name)
    except explore.UploadError as error:
        st.error(str(error))
with guard("loading the test images"):
    test = run_splits(run).test
    for index in picked:
        if 0 <= index < len(test):
            images.append(test.images[index])
            names.append(f"test #{index} ({CLASS_NAMES[int(test.labels[index])]})")

st.subheader("Attack")
c1, c2, c3, c4 = st.columns(4)
attack = c1.selectbox(
    "attack",
    ["none", *ATTACKS.names()],
    format_func=lambda a: ATTACKS.label(a) if a != "none" else "no attack",
    key="upload_attack",
)
eps = c2.slider("eps", 0.0, 0.1, 0.01, 0.001, format="%.3f", key="upload_eps")
alpha = c3.slider("alpha", 0.0, 0.05, 0.01, 0.001, format="%.3f", key="upload_alpha")
steps = c4.slider("steps", 1, 50, 10, key="upload_steps")
target = st.radio("attack crafted on", ["student", "undefended"], horizontal=True)


def analyse(x, label: str) -> None:
    """One row: the image, the DAE's reconstruction, error map and verdict, both models' top-5."""
    view = explore.image_verdicts(x, run, autoencoder, student, undefended, residual_model, threshold)
    cols = st.columns([1, 1, 1, 2, 2])
    cols[0].image(enlarged(x), caption=label, output_format="PNG")
    cols[1].image(enlarged(view["reconstruction"]), caption="DAE reconstruction", output_format="PNG")
    cols[2].image(enlarged(view["error_map"]), caption="error map", output_format="PNG")
    cols[2].markdown(f"MSE **{view['mse']:.5f}** → **{'dropped' if view['dae_dropped'] else 'kept'}**")
    if "residual" in view:
        cols[2].markdown(
            f"noise residual **{view['residual']:.2f}** → "
            f"**{'poison-like' if view['residual_flagged'] else 'clean-like'}**"
        )
    cols[3].markdown("**student** top-5")
    cols[3].dataframe(pd.DataFrame(view["student_top"], columns=["class", "probability"]), hide_index=True)
    cols[4].markdown("**undefended** top-5")
    cols[4].dataframe(pd.DataFrame(view["undefended_top"], columns=["class", "probability"]), hide_index=True)


for image, name in zip(images, names):
    with guard(f"analysing {name}"):
        st.markdown(f"#### {name}")
        analyse(image, "input (32x32)")
        if attack != "none":
            model = student if target == "student" else undefended
            attacked = explore.attack_images(model, image.unsqueeze(0), attack, eps, alpha, steps)[0]
            analyse(attacked, f"{ATTACKS.label(attack)} eps {eps} on the {target}")
