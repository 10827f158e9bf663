"""Autoencoder: the shipped DAE, training a new one, an Optuna search, and a reconstruction gallery."""

from ui.navigation import ensure_navigation

ensure_navigation()  # first: a deep link on a fresh server goes through app.py before the engine loads

from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from core.detectors.dae import TuneConfig, config_from_params, load_study_if_any, redacted
from ui.data import app_dir, dae_folder, dae_gallery, run_dir, trained_daes
from ui.jobs import command, jobs_panel, start
from ui.links import keep, kept
from ui.widgets import enlarged, guard, require_run

st.title("Autoencoder")
run = require_run()

shipped, training, search, gallery = st.tabs(["Shipped DAE", "Train a DAE", "Optuna search", "Gallery"])

with shipped:
    dae = run.results["dae"]
    model, train_settings = dae["config"]["model"], dae["config"]["train"]
    settings = {
        "architecture": f"{model['depth']} stride-2 stages, {model['width']} channels in the first, "
        f"latent of {model['latent_dim']}",
        "training": f"{train_settings['epochs']} epochs, batches of {train_settings['batch_size']}, "
        f"{train_settings['optimizer'].upper()} at learning rate {train_settings['learning_rate']:g} "
        f"(momentum {train_settings['momentum']:g}), {train_settings['schedule']} schedule",
        "trained on": "the defender's trusted images (clean -> clean) and its own "
        + " / ".join(name.upper().replace("IFGSM", "I-FGSM") for name in dae["config"]["defender_attacks"])
        + f" copies of them at eps {dae['config']['eps']:g} (-> clean)",
    }
    st.markdown("\n".join(f"- **{name}**: {value}" for name, value in settings.items()))
    cols = st.columns(2)
    cols[0].metric(
        "mean reconstruction error, test set",
        f"{dae['mean_reconstruction_error_test']:.6f}",
        "paper: 0.008190",
        delta_color="off",
        delta_arrow="off",
    )
    cols[1].metric(
        "mean reconstruction error, trusted calibration slice", f"{dae['mean_reconstruction_error_calibration']:.6f}"
    )


def loss_chart(losses: list[float]) -> go.Figure:
    """Training MSE per finished epoch, a marker per epoch (one epoch is a point, not an empty line), whole epochs."""
    figure = go.Figure(go.Scatter(x=list(range(1, len(losses) + 1)), y=losses, mode="lines+markers", name="MSE"))
    figure.update_layout(
        height=260, margin=dict(t=10, b=30), xaxis_title="epoch", yaxis_title="training MSE", xaxis_dtick=1
    )
    return figure


with training:
    st.caption(
        "A DAE trained here is a background job (`python -m core dae`): leave the page, it goes on. It is kept in the "
        "app's cache with its losses and test error; the Gallery tab shows the one you pick and you can download it "
        "(safetensors). The run's filter, its scores and the Threshold and Your images pages keep the run's own DAE: "
        "`python -m core run --dae-epochs ...` (or `--use-best-trial` after an Optuna search) makes a run with another."
    )
    base = st.session_state.get("dae_config", run.config.dae)
    c1, c2, c3 = st.columns(3)

    def remembered(key: str, default) -> dict:
        """value, key and on_change of a widget whose value is kept for the session (ui.links.kept)."""
        return {"value": kept(key, default), "key": key, "on_change": keep, "args": (key,)}

    depth = c1.slider("depth (stride-2 stages)", 1, 4, **remembered("dae_depth", base.model.depth))
    width = c1.select_slider(
        "width (first stage channels)", [8, 16, 24, 32, 48, 64], **remembered("dae_width", base.model.width)
    )
    latent = c2.select_slider(
        "latent size", [16, 32, 64, 128, 256, 512], **remembered("dae_latent", min(max(base.model.latent_dim, 16), 512))
    )
    optimizer = c2.radio(
        "optimiser",
        ["sgd", "adam"],
        index=["sgd", "adam"].index(kept("dae_opt", base.train.optimizer)),
        horizontal=True,
        key="dae_opt",
        on_change=keep,
        args=("dae_opt",),
    )
    learning_rate = c3.number_input(
        "learning rate", 1e-5, 2.0, format="%.5f", **remembered("dae_lr", float(base.train.learning_rate))
    )
    momentum = c3.slider("momentum (SGD)", 0.0, 0.99, **remembered("dae_momentum", float(base.train.momentum)))
    epochs = c3.slider("epochs", 1, 60, **remembered("dae_epochs", base.train.epochs))
    st.button(  # a callback records the click before the rerun reaches the button
        "Train in the background",
        type="primary",
        key="train-dae",
        on_click=lambda: st.session_state.update(train_dae_requested=True),
    )
    if st.session_state.pop("train_dae_requested", False):
        with guard("starting the DAE's training"):
            settings = {"depth": depth, "width": width, "latent-dim": latent, "optimizer": optimizer}
            settings |= {
                "learning-rate": repr(float(learning_rate)),
                "momentum": repr(float(momentum)),
                "epochs": epochs,
            }
            flags = [item for name, value in settings.items() for item in (f"--{name}", str(value))]
            out = dae_folder(run_dir(), flags)
            title = (
                f"DAE depth {depth}, width {width}, latent {latent}, {optimizer} lr {learning_rate:g}, {epochs} epochs"
            )
            start(title, "dae", [command("dae", "--run-dir", run_dir(), "--out", str(out), *flags)], run_dir=run_dir())
    with guard("the background jobs"):
        jobs_panel(run_dir(), kind="dae", key="autoencoder", limit=3)
    trained = trained_daes(run_dir())
    if trained:
        st.markdown("**DAEs trained here on this run's pairs**")
        for entry in trained:
            with st.container(border=True):
                metrics = entry["metrics"]
                model, train_settings = entry["config"]["model"], entry["config"]["train"]
                st.caption(
                    f"depth {model['depth']}, width {model['width']}, latent {model['latent_dim']}; "
                    f"{train_settings['optimizer']} lr {train_settings['learning_rate']:g}, "
                    f"{train_settings['epochs']} epochs. Mean reconstruction error on 2,000 test images: "
                    f"{metrics['mean_reconstruction_error_test']:.6f} (run's DAE: "
                    f"{run.results['dae']['mean_reconstruction_error_test']:.6f})"
                )
                if metrics.get("losses"):
                    st.plotly_chart(loss_chart(metrics["losses"]), width="stretch", key=f"losses-{entry['folder']}")
                cols = st.columns(2)
                cols[0].download_button(
                    "Download (safetensors)",
                    (Path(entry["folder"]) / "dae.safetensors").read_bytes(),
                    "dae_trained_here.safetensors",
                    "application/octet-stream",
                    key=f"download-{entry['folder']}",
                )
                cols[1].button(
                    "Show it in the Gallery",
                    key=f"gallery-{entry['folder']}",
                    on_click=lambda folder=entry["folder"]: st.session_state.update(gallery_dae=folder),
                )

with search:
    s1, s2 = st.columns([3, 1])
    storage = s1.text_input(
        "Optuna storage URL",
        f"sqlite:///{app_dir() / 'optuna.db'}",
        key="optuna_storage",
        help="sqlite:///file.db, journal:///path/file.log or postgresql://user:password@host:port/database: the "
        "same URL as `python -m core tune --storage` shows the study its workers fill",
    )
    study_name = s2.text_input("study", "dae-app", key="optuna_study")
    st.caption(f"A persistent study (`{study_name}` in `{redacted(storage)}`): each click adds trials and resumes it.")
    c1, c2 = st.columns(2)
    trials = c1.number_input("trials to add", 1, 50, 3)
    epochs_per_trial = c2.number_input("epochs per trial", 1, 20, 2)
    config = TuneConfig(
        trials=int(trials),
        storage=storage.strip(),
        study_name=study_name.strip() or "dae-app",
        epochs_per_trial=int(epochs_per_trial),
        seed=run.config.seed,
    )
    st.button(  # a callback records the click before the rerun reaches the button
        "Run trials in the background",
        key="run-trials",
        on_click=lambda: st.session_state.update(run_trials_requested=True),
    )
    if st.session_state.pop("run_trials_requested", False):
        with guard("starting the Optuna search"):
            arguments = [
                "--run-dir",
                run_dir(),
                "--trials",
                str(config.trials),
                "--epochs",
                str(config.epochs_per_trial),
            ]
            arguments += ["--storage", config.storage, "--study", config.study_name, "--seed", str(config.seed)]
            title = f"{config.trials} Optuna trials of {config.epochs_per_trial} epochs, study {config.study_name}"
            start(title, "tune", [command("tune", *arguments)], run_dir=run_dir(), again=True)
    with guard("the background jobs"):
        jobs_panel(run_dir(), kind="tune", key="tune", limit=2)
    with guard("reading the study"):
        study = load_study_if_any(config)
        if study is not None and any(t.value is not None for t in study.trials):
            from optuna import visualization

            st.plotly_chart(visualization.plot_optimization_history(study), width="stretch")
            completed = [t for t in study.trials if t.value is not None]
            if len(completed) >= 2:
                with guard("parameter importances"):
                    st.plotly_chart(visualization.plot_param_importances(study), width="stretch")
                st.plotly_chart(visualization.plot_parallel_coordinate(study), width="stretch")
            st.write(f"Best trial #{study.best_trial.number}: validation MSE {study.best_value:.6f}", study.best_params)
            if st.button("Apply the best trial to *Train a DAE*"):
                st.session_state["dae_config"] = config_from_params(study.best_params, run.config.dae)
                for key in [key for key in st.session_state if str(key).startswith("kept_dae_")]:
                    del st.session_state[key]  # the trial's values replace the ones typed before
                st.rerun()
        else:
            st.caption("No finished trials yet.")

with gallery:
    with guard("the gallery"):
        view = dae_gallery(run_dir(), st.session_state.get("gallery_dae"))
        which = "DAE picked on the Train a DAE tab" if view["trained_here"] else "run’s DAE"
        st.caption(f"The {which} on 8 delivered images.")
        bar_left, bar_right = st.columns([1, 3])
        bar_left.image(enlarged(view["colour_bar"], 2), output_format="PNG")
        bar_right.caption(
            f"Error map colours: blue 0, red {view['error_scale']:.2g} or more (squared error per pixel; red marks the "
            "top 1% of these images' pixels)."
        )
        for row in range(len(view["input"])):
            cols = st.columns(4)
            cols[0].image(enlarged(view["input"][row]), caption="input" if row == 0 else None, output_format="PNG")
            cols[1].image(
                enlarged(view["reconstruction"][row]),
                caption="reconstruction" if row == 0 else None,
                output_format="PNG",
            )
            cols[2].image(
                enlarged(view["error_map"][row]),
                caption="error map" if row == 0 else None,
                output_format="PNG",
            )
            cols[3].markdown(f"{'**poison**' if view['is_poisoned'][row] else 'clean'} — MSE {view['mse'][row]:.5f}")
