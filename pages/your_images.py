"""Your images: upload images (or pick GTSRB test images), see both models and the DAE, then attack them."""
import pandas as pd
import streamlit as st
import torch

from core import explore
from core.data import CLASS_NAMES
from core.detect import SupervisedDetector, reconstruction_error
from core.train import predict
from ui.common import (cached_autoencoder, cached_classifier, cached_run, cached_supervised_detector, enlarged, ensure_navigation,
                       guard, run_dir, run_splits)

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
residual_detector = SupervisedDetector(residual_model, device=torch.device("cpu")) if residual_model is not None else None
st.caption(f"Student: `filter_distillation`; baseline: `undefended`. DAE verdict at the threshold {threshold:.5f} "
           "(set it on the Threshold page)" + (f"; noise-residual detector verdict at the run's threshold "
                                                f"{run.threshold_of('supervised'):.3f}." if residual_detector else "."))

uploads = st.file_uploader("Upload images (PNG, JPEG, PPM, WebP)", type=["png", "jpg", "jpeg", "ppm", "webp"],
                           accept_multiple_files=True)
picked = st.multiselect("...or pick GTSRB test images by index", list(range(0, 12630, 97)), default=[] if uploads else [0])

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
attack = c1.selectbox("attack", ["none", "fgsm", "ifgsm"], format_func=lambda a: a.upper() if a != "none" else "no attack")
eps = c2.slider("eps", 0.0, 0.1, 0.01, 0.001, format="%.3f", key="upload_eps")
alpha = c3.slider("alpha", 0.0, 0.05, 0.01, 0.001, format="%.3f", key="upload_alpha")
steps = c4.slider("steps", 1, 50, 10, key="upload_steps")
target = st.radio("attack crafted on", ["student", "undefended"], horizontal=True)


def top5(model, x):
    return pd.DataFrame(explore.top_classes(model, x.unsqueeze(0))[0], columns=["class", "probability"])


def analyse(x, label: str) -> None:
    """One row: the image, the DAE's reconstruction, error map and verdict, both models' top-5."""
    reconstruction = predict(autoencoder, x.unsqueeze(0))[0]
    error = float(reconstruction_error(autoencoder, x.unsqueeze(0))[0])
    heat = ((reconstruction - x) ** 2).mean(dim=0)
    heat = (heat / (heat.max() or 1.0)).clamp(0, 1)
    cols = st.columns([1, 1, 1, 2, 2])
    cols[0].image(enlarged(x), caption=label)
    cols[1].image(enlarged(reconstruction), caption="DAE reconstruction")
    cols[2].image(enlarged(torch.stack([heat, torch.zeros_like(heat), 1 - heat])), caption="error map")
    cols[2].markdown(f"MSE **{error:.5f}** → **{'dropped' if error > threshold else 'kept'}**")
    if residual_detector is not None:
        residual = float(residual_detector.score(x.unsqueeze(0))[0])
        flagged = residual > run.threshold_of("supervised")
        cols[2].markdown(f"noise residual **{residual:.2f}** → **{'poison-like' if flagged else 'clean-like'}**")
    cols[3].markdown("**student** top-5")
    cols[3].dataframe(top5(student, x), hide_index=True)
    cols[4].markdown("**undefended** top-5")
    cols[4].dataframe(top5(undefended, x), hide_index=True)


for image, name in zip(images, names):
    with guard(f"analysing {name}"):
        st.markdown(f"#### {name}")
        analyse(image.float() / 255, "input (32x32)")
        if attack != "none":
            model = student if target == "student" else undefended
            attacked = explore.attack_images(model, image.unsqueeze(0), attack, eps, alpha, steps)[0]
            analyse(attacked, f"{attack.upper()} eps {eps} on the {target}")
