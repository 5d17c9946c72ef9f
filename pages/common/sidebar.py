"""The sidebar block every training page shares: device, seed, dataset, model."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import streamlit as st

from lrbs.core.data import DATASETS, Arrays, DataSpec, availability, csv_columns, load
from lrbs.core.device import describe, pick_device
from lrbs.core.errors import LrbsError
from lrbs.core.models import MODELS, ModelSpec
from lrbs.core.setup import Setup
from lrbs.core.workload import list_workloads, workload_folder
from pages.common import workloads
from pages.common.history import history_sidebar
from pages.common.state import check_url, default, within


@st.cache_data(show_spinner="Loading the dataset…", max_entries=6)
def cached_arrays(spec: DataSpec) -> Arrays:
    return load(spec)


@st.cache_data(ttl=60, show_spinner=False)
def cached_availability() -> dict[str, bool]:
    return availability()


@st.cache_resource
def device_label(name: str) -> str:
    return describe(pick_device(name)).label()


def _device_choices() -> list[str]:
    import torch

    choices = ["auto", "cpu"]
    if torch.cuda.is_available():
        choices.append("cuda")
    if torch.backends.mps.is_available():
        choices.append("mps")
    return choices


def _save_upload(upload) -> str:
    """Keep an uploaded CSV as a file named by its content, so the DataSpec (a cache key) is
    stable across reruns."""
    data = upload.getvalue()
    digest = hashlib.sha256(data).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / "lrbs-uploads" / f"{digest}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(data)
    return str(path)


def _csv_inputs() -> tuple[str | None, str | None]:
    upload = st.file_uploader("CSV file", type=["csv", "txt"], key="csv_upload")
    if upload is not None:
        st.session_state["csv_path"] = _save_upload(upload)
        st.session_state["csv_name"] = upload.name
    path = st.session_state.get("csv_path")
    if not path or not Path(path).exists():
        st.info("Upload a CSV: numeric feature columns and one class column.")
        return None, None
    st.caption(f"Using {st.session_state.get('csv_name', Path(path).name)}")
    try:
        columns = csv_columns(path)
    except LrbsError as exc:
        st.error(str(exc))
        return path, None
    if not columns:
        st.error("The CSV has no columns.")
        return path, None
    default("s_target", columns[-1])
    if st.session_state.get("s_target") not in columns:
        st.session_state["s_target"] = columns[-1]
    target = st.selectbox("Target column", columns, key="s_target")
    return path, target


def shared_sidebar() -> tuple[Setup, Arrays] | None:
    """Draw the shared block; return the setup and its loaded data, or None after showing
    what is wrong."""
    sb = st.sidebar
    default("s_device", "auto")
    default("s_seed", 0)
    default("s_dataset", "mnist1d")
    default("s_model", "mlp")
    default("s_hidden", "256")
    here = cached_availability()
    with sb:
        st.subheader("Data & model")
        device = st.selectbox("Device", _device_choices(), key="s_device")
        st.caption(f"Training on: {device_label(device)}")
        seed = st.number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, key="s_seed")
        names = [n for n in DATASETS if n == "csv" or here.get(n)]
        files = list_workloads(workload_folder())
        names += [workloads.KEY + p.name for p in files]
        if st.session_state.get("s_dataset") not in names:  # a workload that has gone
            st.session_state["s_dataset"] = "mnist1d"
        name = st.selectbox(
            "Dataset",
            names,
            key="s_dataset",
            format_func=workloads.title,
            help=workloads.HELP,
        )
        st.session_state[workloads.OWN_OPTIMIZER] = ""
        if name.startswith(workloads.KEY):
            chosen = workloads.workload_setup(name, int(seed), device)
            if chosen is None:
                history_sidebar()
            return chosen
        entry = DATASETS[name]
        size = None
        if entry.default_size:
            default(f"s_size_{name}", entry.default_size)
            size = int(
                st.number_input(
                    "Samples to generate",
                    min_value=100,
                    max_value=70000,
                    step=1000,
                    key=f"s_size_{name}",
                )
            )
        csv_path = target = None
        if name == "csv":
            csv_path, target = _csv_inputs()
        absent = [n for n, ok in here.items() if not ok]
        if absent:
            with st.expander(f"{len(absent)} more dataset(s) not on this machine"):
                for n in absent:
                    st.markdown(f"**{DATASETS[n].title}**: {DATASETS[n].how_to_get}")
        model = st.selectbox(
            "Model",
            list(MODELS),
            key="s_model",
            help="\n\n".join(f"**{k}**: {v}" for k, v in MODELS.items()),
        )
        hidden = (256,)
        if model == "mlp":
            text = st.text_input("Hidden layers (units, comma-separated)", key="s_hidden")
            try:
                hidden = tuple(int(h) for h in text.replace(" ", "").split(",") if h)
            except ValueError:
                st.error(f"Hidden layers must be whole numbers separated by commas, not {text!r}")
                return None
    history_sidebar()
    if name == "csv" and (csv_path is None or target is None):
        return None
    try:
        setup = Setup(
            DataSpec(name, size=size, seed=int(seed), csv_path=csv_path, target=target),
            ModelSpec(model, hidden=hidden),
            int(seed),
            device,
        )
        arrays = cached_arrays(setup.data)
        from lrbs.core.models import build_model

        build_model(setup.model, arrays.input_shape, arrays.n_classes, setup.seed)
    except LrbsError as exc:
        sb.error(str(exc))
        return None
    for note in arrays.notes:
        sb.caption(note)
    return setup, arrays


OPTIMIZER_TITLES = {"sgd": "SGD", "momentum": "SGD + momentum", "adam": "Adam", "adamw": "AdamW"}


def optimizer_inputs(prefix: str, default_name: str = "sgd") -> tuple[str, float]:
    """Optimizer choice and momentum (shown only for SGD + momentum)."""
    default(f"{prefix}_optimizer", default_name)
    own = st.session_state.get(workloads.OWN_OPTIMIZER, "")
    name = st.selectbox(
        "Optimizer",
        list(OPTIMIZER_TITLES),
        key=f"{prefix}_optimizer",
        format_func=OPTIMIZER_TITLES.get,
        disabled=bool(own),  # the workload's optimizer() is what trains
        help=f"The workload's own optimizer() ({own}) is used; the experiment sets its rate."
        if own
        else None,
    )
    if own:
        st.caption(f"Optimizer: the workload's own {own}, its rate set by the experiment.")
    momentum = 0.9
    if name == "momentum":
        default(f"{prefix}_momentum", 0.9)
        within(f"{prefix}_momentum", 0.0, 0.99)
        momentum = st.slider("Momentum", 0.0, 0.99, step=0.01, key=f"{prefix}_momentum")
    return name, float(momentum)


def parse_floats(text: str, what: str) -> tuple[float, ...]:
    """'0.001, 0.01, 1e-1' -> floats, or a ConfigError naming the bad piece."""
    from lrbs.core.errors import ConfigError

    out = []
    for piece in text.replace(";", ",").replace(" ", ",").split(","):
        if not piece:
            continue
        try:
            out.append(float(piece))
        except ValueError:
            raise ConfigError(f"{what}: {piece!r} is not a number") from None
    return tuple(out)


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    """'16, 32 64' -> whole numbers, or a ConfigError naming what is not one."""
    from lrbs.core.errors import ConfigError

    values = parse_floats(text, what)
    if any(v != int(v) for v in values):
        raise ConfigError(f"{what} must be whole numbers")
    return tuple(int(v) for v in values)


def with_int(text: str, value: int, what: str) -> str:
    """A list of whole numbers as text with `value` in it, sorted (the text itself if it does
    not parse: its own error shows where it is read)."""
    from lrbs.core.errors import LrbsError

    try:
        values = set(parse_ints(text, what))
    except LrbsError:
        return text
    return ", ".join(str(v) for v in sorted(values | {int(value)}))


def require_setup() -> tuple[Setup, Arrays]:
    """The shared block for a training page; stops the page (after saying why) when the data
    or model settings are not usable."""
    chosen = shared_sidebar()
    if chosen is None:
        check_url()
        st.info("Fix the data and model settings in the sidebar to run an experiment.")
        st.stop()
    return chosen
