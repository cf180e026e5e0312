"""Test tiers. `pytest` runs the fast set (pure functions, tiny networks, file I/O; training scripts belong to the
slow tier).
`pytest --all` (what .ci/run and the README's test command run) adds the slow tier (training, torchrun,
Gradio servers, full demo cascades) and the browser tier (the real app in headless Chromium).
Mark a test with @pytest.mark.slow / @pytest.mark.browser, or list its whole module below."""
import os

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402

# the README's test command runs two pytest workers (pytest-xdist, -n 2): one torch thread each then, so they do not
# oversubscribe a 2-core machine; a plain `pytest` keeps two threads
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1))

# whole modules by tier (each starts servers, trains or launches Chromium)
BROWSER_MODULES = {"test_app_browser.py", "test_teaching_browser.py", "test_app_live_browser.py"}
SLOW_MODULES = {"test_app.py", "test_app_hardening.py", "test_teaching_app.py", "test_train_stage.py", "test_train_regressor.py",
                "test_speed.py", "test_ddp.py", "test_determinism.py"}
SLOW_TESTS = {"test_evaluate_with_perceptual_metrics", "test_imagen_denoiser_parity", "test_imagen_sample_parity",
              "test_imagen_denoiser_parity_per_sample_sigma",
              "test_bench_tiny_rows_are_sane", "test_malloc_tuning_is_applied_once_and_can_be_turned_off",
              "test_i3d_parity_and_fvd_of_identical_sets", "test_pool_records_complete_and_anonymous",
              # training scripts in subprocesses, torchrun, the demo cascade generating (10-30 s each)
              "test_train_orient_resume_bundle_and_one_process", "test_train_tracer_one_step_resume_bundle_and_ef_command",
              "test_train_tracer_mask_frames_from_v1_and_v2_per_frame_masks",
              "test_train_tracer_torchrun_two_cpu_ranks_agree", "test_readers_turn_an_apex_down_real_clip_apex_up"}


def pytest_addoption(parser):
    parser.addoption("--all", action="store_true", help="run every tier: fast, slow and browser tests")


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.path.name
        if module in BROWSER_MODULES:
            item.add_marker(pytest.mark.browser)
        if module in SLOW_MODULES or item.originalname in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
    if config.getoption("--all") or config.getoption("-m"):
        return
    keep, skipped = [], []
    for item in items:
        (skipped if item.get_closest_marker("slow") or item.get_closest_marker("browser") else keep).append(item)
    if skipped:
        config.hook.pytest_deselected(items=skipped)
        items[:] = keep
