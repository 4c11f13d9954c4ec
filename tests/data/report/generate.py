"""Writes the hand-made result sets next to this file (the `cpu` set is a real run, trimmed).

    python tests/data/report/generate.py

gpu/        resnet50, PyTorch and TensorFlow, repeats 0-6 on a GPU: TensorFlow's repeat 4 failed and
            PyTorch's repeat 6 diverged, so 5 repeats are common and the olympic trim keeps 3 a
            side; PyTorch's repeat 5 is a slow outlier. Every finished run journals its progress
            windows (one a second) and epoch ends; repeat 0 has telemetry, two samples a second:
            NVML busy 47 % (PyTorch) and 52 % (TensorFlow) in training, 20 % in evaluation, 0 %
            elsewhere.
gpu-tuned/  the same with PyTorch's steps twice as fast and TensorFlow's unchanged (for compare).
three/      mobilenet_v2 in PyTorch, TensorFlow and JAX, modes default and tuned, 2 repeats, CPU,
            no telemetry.csv and no context.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent
# Step medians (s) per repeat; None: the run did not finish.
PYTORCH_STEPS = [0.0126, 0.0125, 0.0127, 0.0124, 0.0128, 0.0200, None]
TENSORFLOW_STEPS = [0.0135, 0.0134, 0.0136, 0.0133, None, 0.0137, 0.0135]
ACCURACY = {
    "pytorch": [0.6612, 0.6590, 0.6634, 0.6601, 0.6620, 0.6580, None],
    "tensorflow": [0.6705, 0.6689, 0.6712, 0.6698, None, 0.6701, 0.6690],
}
STARTUP = {  # import, data, build, first step (s)
    "pytorch": (2.10, 0.40, 0.30, 0.90),
    "tensorflow": (1.80, 0.50, 0.70, 9.70),
}
TRAIN, TEST, EPOCHS, BATCH = 50_000, 10_000, 2, 32
# Steps between two progress events after the first (the recorder's are 0.25 s apart).
WINDOW_STEPS = 80
EVAL_S, BETWEEN_EPOCHS_S = 2.5, 0.5
BUSY_PCT = {"pytorch": 47.0, "tensorflow": 52.0}


def journal(run_id: str, framework: str, step: float, first: float, start: float) -> tuple:
    """A finished run's progress and epoch-end records as the journal holds them, and its
    intervals: (start_s, end_s, busy %) of its training and evaluation. Epoch 1 trains from
    `start`, then waits BETWEEN_EPOCHS_S and evaluates; epoch 2 waits BETWEEN_EPOCHS_S (in its
    first window: the recorder opens it at epoch 1's end), trains and evaluates."""
    steps_per_epoch = TRAIN // BATCH
    records, busy = [], []
    epoch_end = None
    for epoch in range(EPOCHS):
        train_start = start if epoch == 0 else epoch_end + BETWEEN_EPOCHS_S
        window_start = train_start if epoch == 0 else epoch_end
        ends = [1, *range(1 + WINDOW_STEPS, steps_per_epoch, WINDOW_STEPS), steps_per_epoch]
        if epoch > 0:
            ends = ends[1:]
        previous = 0
        for end in ends:
            t = train_start + (end * step if epoch else first + (end - 1) * step)
            records.append(
                {
                    "run_id": run_id,
                    "framework": framework,
                    "t_s": t,
                    "progress": {
                        "epoch": epoch,
                        "step": end,
                        "steps_per_epoch": steps_per_epoch,
                        "loss": 1.6 - 0.5 * epoch,
                        "images_per_s": (end - previous) * BATCH / (t - window_start),
                    },
                }
            )
            previous, window_start = end, t
        eval_start = window_start + (BETWEEN_EPOCHS_S if epoch == 0 else 0.0)
        epoch_end = eval_start + EVAL_S
        busy += [(train_start, window_start, BUSY_PCT[framework]), (eval_start, epoch_end, 20.0)]
        records.append(
            {
                "run_id": run_id,
                "framework": framework,
                "t_s": epoch_end,
                "epoch_end": {"epoch": epoch},
            }
        )
    return records, busy


def gpu_set(name: str, pytorch_scale: float) -> None:
    out = HERE / name
    out.mkdir(exist_ok=True)
    runs, epochs, telemetry, events = [], [], [], []
    for repeat in range(7):
        for framework, steps in (("pytorch", PYTORCH_STEPS), ("tensorflow", TENSORFLOW_STEPS)):
            run_id = f"resnet50-{framework}-r{repeat}"
            step = steps[repeat]
            status = (
                "ok"
                if step is not None
                else ("failed" if framework == "tensorflow" else "diverged")
            )
            error = {
                "failed": "worker exited with code -9 (out of memory?) [/job:localhost]",
                "diverged": "loss became NaN in epoch 2 | step 113",
            }.get(status, "")
            imp, data, build, first = STARTUP[framework]
            row = dict(
                run_id=run_id,
                framework=framework,
                model="resnet50",
                repeat=repeat,
                status=status,
                error=error,
                epochs=EPOCHS,
                batch_size=BATCH,
                seed=repeat,
                device="cuda",
                precision="fp32",
                compile=False,
                cudnn_benchmark=False,
                architecture="canonical",
                model_definitions="canonical (identical in every framework)",
                init="shared",
                dataset="data/cifar10",
                augment="crop-flip",
                optimizer="sgd",
                learning_rate=0.01,
                momentum=0.9,
                nesterov=False,
                weight_decay=0.0,
                lr_schedule="constant",
                label_smoothing=0.0,
                train_samples=TRAIN,
                test_samples=TEST,
                device_name="NVIDIA H100 80GB HBM3",
                gpu="NVIDIA H100 80GB HBM3",
                framework_version="2.11.0" if framework == "pytorch" else "2.21.0",
                import_s=imp,
                data_load_s=data,
                build_s=build,
            )
            events.append(
                {
                    "run_id": run_id,
                    "framework": framework,
                    "t_s": imp + data + build,
                    "run_started": {
                        "run_id": run_id,
                        "framework": framework,
                        "settings": {
                            "threads": "16",
                            "tf32_matmul": "false",
                            "compile": "eager"
                            if framework == "pytorch"
                            else "tf.function graph, no xla",
                            "cudnn_benchmark": "false"
                            if framework == "pytorch"
                            else "always (TensorFlow autotunes)",
                        },
                    },
                }
            )
            if status == "ok":
                step = step * (pytorch_scale if framework == "pytorch" else 1)
                steps_per_epoch = TRAIN // BATCH
                train = step * steps_per_epoch
                start = imp + data + build + 0.05
                epoch_times = [train + first + 3.0, train + 3.0]
                total = start + sum(epoch_times)
                accuracy = ACCURACY[framework][repeat]
                row |= dict(
                    final_test_accuracy=accuracy,
                    train_time_s=2 * train + first,
                    total_time_s=total,
                    images_per_s=TRAIN * EPOCHS / (2 * train + first),
                    time_to_first_step_s=start + first,
                    first_step_s=first,
                    step_time_median_s=step,
                    step_time_p90_s=step * 1.2,
                    peak_gpu_mem_bytes=(2.0 if framework == "pytorch" else 3.5) * 2**30,
                    peak_framework_mem_bytes=(0.65 if framework == "pytorch" else 1.2) * 2**30,
                    peak_framework_reserved_bytes=None,
                    mean_gpu_util_pct=47.0 if framework == "pytorch" else 52.0,
                    energy_j=250.0 * total,
                    energy_method="nvml-counter",
                )
                for epoch, epoch_time in enumerate(epoch_times):
                    epochs.append(
                        dict(
                            run_id=run_id,
                            framework=framework,
                            model="resnet50",
                            repeat=repeat,
                            epoch=epoch,
                            train_loss=1.6 - 0.5 * epoch,
                            train_accuracy=0.4 + 0.2 * epoch,
                            test_loss=1.3 - 0.3 * epoch,
                            test_accuracy=accuracy - 0.1 * (1 - epoch),
                            train_time_s=train,
                            eval_time_s=2.5,
                            epoch_time_s=epoch_time,
                            between_epoch_overhead_s=0.5,
                            images_per_s=TRAIN / train,
                            energy_j=250.0 * epoch_time,
                        )
                    )
                records, intervals = journal(run_id, framework, step, first, start)
                events += records
                if repeat == 0:
                    energy = 0.0
                    for i in range(int(2 * total)):
                        t = i / 2
                        busy = next((b for s, e, b in intervals if s < t <= e), 0.0)
                        power = 120 + 2 * busy
                        energy += power / 2
                        telemetry.append(
                            dict(
                                run_id=run_id,
                                framework=framework,
                                model="resnet50",
                                t_s=t,
                                gpu_util_pct=busy,
                                mem_util_pct=busy / 3,
                                mem_used_bytes=(2.0 if framework == "pytorch" else 3.5)
                                * 2**30
                                * min(1, t / start),
                                power_w=power,
                                energy_j=energy,
                                temp_c=40 + busy / 5,
                                sm_clock_mhz=1980,
                                sm_active_pct=busy / 2.2,
                                rss_bytes=3 * 2**30,
                                cpu_pct=100.0,
                            )
                        )
            runs.append(row)
    pd.DataFrame(runs).to_csv(out / "runs.csv", index=False)
    pd.DataFrame(epochs).to_csv(out / "epochs.csv", index=False)
    pd.DataFrame(telemetry).to_csv(out / "telemetry.csv", index=False)
    (out / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    context = {
        "command": "fwbench run --frameworks pytorch,tensorflow --models resnet50 "
        "--dataset cifar10 --epochs 2 --repeats 7 --device cuda",
        "frameworks": ["pytorch", "tensorflow"],
        "models": ["resnet50"],
        "repeats": 7,
        "fwbench": {"version": "0.1.0", "git_commit": "0123456789abcdef0123", "git_dirty": False},
        "host": {
            "cpu_model": "Intel(R) Xeon(R) Platinum 8480+",
            "cores": 16,
            "memory_bytes": 128 * 2**30,
            "driver": "580.159.04",
            "gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_bytes": 80 * 2**30}],
        },
        "utc_start": "2026-11-26T12:00:00+00:00",
        "services": {
            "pytorch": {
                "framework_version": "2.11.0",
                "python_version": "3.12.3",
                "cuda_version": "13.0",
                "cudnn_version": "92400",
                "devices": ["cuda:0"],
                "library_versions": {"torchvision": "0.26.0"},
            },
            "tensorflow": {
                "framework_version": "2.21.0",
                "python_version": "3.12.3",
                "cuda_version": "12.5.1",
                "cudnn_version": "9",
                "devices": ["GPU:0"],
                "library_versions": {"keras": "3.15.1"},
            },
        },
    }
    (out / "context.json").write_text(json.dumps(context, indent=2) + "\n")


def three_frameworks() -> None:
    out = HERE / "three"
    out.mkdir(exist_ok=True)
    runs, epochs = [], []
    steps = {"pytorch": 0.080, "tensorflow": 0.078, "jax": 0.060}
    for mode, factor in (("default", 1.0), ("tuned", 0.5)):
        for repeat in range(2):
            for framework, step in steps.items():
                run_id = f"mobilenet_v2-{framework}-{mode}-r{repeat}"
                step = step * factor * (1 + 0.01 * repeat)
                runs.append(
                    dict(
                        run_id=run_id,
                        framework=framework,
                        model="mobilenet_v2",
                        mode=mode,
                        repeat=repeat,
                        status="ok",
                        error="",
                        epochs=1,
                        batch_size=32,
                        dataset="synthetic",
                        device="cpu",
                        train_samples=256,
                        test_samples=128,
                        device_name="cpu",
                        gpu="none",
                        import_s=2.0,
                        data_load_s=0.1,
                        build_s=0.2,
                        final_test_accuracy=0.2 + 0.01 * repeat,
                        train_time_s=8 * step,
                        total_time_s=3 + 8 * step,
                        time_to_first_step_s=2.5,
                        first_step_s=0.2,
                        step_time_median_s=step,
                        step_time_p90_s=step * 1.1,
                    )
                )
                epochs.append(
                    dict(
                        run_id=run_id,
                        framework=framework,
                        model="mobilenet_v2",
                        repeat=repeat,
                        epoch=0,
                        train_loss=2.3,
                        test_loss=2.2,
                        test_accuracy=0.2 + 0.01 * repeat,
                        epoch_time_s=8 * step,
                        between_epoch_overhead_s=0.01,
                    )
                )
    pd.DataFrame(runs).to_csv(out / "runs.csv", index=False)
    pd.DataFrame(epochs).to_csv(out / "epochs.csv", index=False)


if __name__ == "__main__":
    gpu_set("gpu", 1.0)
    gpu_set("gpu-tuned", 0.5)
    three_frameworks()
