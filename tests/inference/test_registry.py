"""Everything that lists models or settings reads the engine's registry: the launch form, the CLI,
the API schema, the results pages and the recommendation; no other module names a model or a
setting of its own."""
import re
from dataclasses import fields
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from inference.engine import registry
from inference.engine.types import BenchmarkConfig
from inference.models import BenchmarkRun

REPO = Path(__file__).resolve().parents[2]


def test_every_engine_field_is_a_registry_setting_or_a_named_run_or_process_field():
    names = {f.name for f in fields(BenchmarkConfig)}
    assert names == set(registry.SETTINGS) | set(registry.RUN_FIELDS) | set(registry.PROCESS_FIELDS)


def _sources():
    for folder in ("inference", "api", "frontend", "annotator", "config", "bench"):
        for path in (REPO / folder).rglob("*"):
            if path.suffix in (".py", ".html", ".js") and "migrations" not in path.parts and ".venv" not in path.parts:
                yield path, path.read_text(errors="replace")


def test_no_module_names_a_model_outside_the_registry():
    """A model's name appears as a literal only in the registry, its own module and the bench (which
    names anomalib's models beside ours); any model-shaped literal elsewhere must be a registry name."""
    # types.py holds BenchmarkConfig's default model, which registry.DEFAULT_MODEL reads
    allowed_files = {REPO / "inference/engine/registry.py", REPO / "inference/engine/types.py"} | {
        REPO / f"inference/engine/{m.module}.py" for m in registry.MODELS.values()}
    offenders = []
    for path, text in _sources():
        if path in allowed_files or path.parts[-2] == "bench":
            continue
        for name in registry.MODELS:
            if re.search(rf"""["']{name}["']""", text):
                offenders.append(f"{path.relative_to(REPO)} names {name!r}")
        for found in re.findall(r"""(?:model\s*==\s*|model=|"model":\s*|data-model=)["']([a-z_]+)["']""", text):
            if found not in registry.MODELS:
                offenders.append(f"{path.relative_to(REPO)} names unknown model {found!r}")
    assert not offenders, offenders


def test_no_module_reads_a_setting_the_registry_does_not_define():
    known = set(registry.SETTINGS) | set(registry.RUN_FIELDS) | set(registry.PROCESS_FIELDS)
    pattern = re.compile(r"""(?:config\[["']|config\.get\(["']|run\.config\.)([a-z_]+)""")
    offenders = [f"{path.relative_to(REPO)}: {name}" for path, text in _sources()
                 for name in pattern.findall(text) if name not in known]
    assert not offenders, offenders


@pytest.mark.django_db
def test_launch_form_offers_every_model_and_every_setting_with_its_bounds(client, admin_account):
    client.force_login(admin_account)
    html = client.get("/benchmarks/new/").content.decode()
    for spec in registry.MODELS.values():
        assert f'name="models" value="{spec.name}"' in html and spec.label in html
    for setting in registry.SETTINGS.values():
        tag = re.search(rf'<(?:input|select)[^>]*name="{setting.name}"[^>]*>', html)
        assert tag, setting.name
        if setting.low is not None:
            assert f'min="{setting.low:g}"' in tag.group(0).replace(".0\"", "\"") or "min=" in tag.group(0), tag.group(0)
    # model-specific settings are marked with the models that read them (the page hides the others)
    assert 'data-model="patchcore"' in html and 'data-model="padim"' in html


@pytest.mark.django_db
def test_launch_form_posts_a_patchcore_run_and_refuses_out_of_bounds_settings(
        client, admin_account, bench_demo, django_capture_on_commit_callbacks):
    client.force_login(admin_account)
    widget = bench_demo.products.get(name="widget")
    post = {"dataset": bench_demo.pk, "products": [widget.pk], "background": "any", "models": ["patchcore"],
            "seed": 2, "image_size": 64, "coreset_ratio": "0.05", "n_features": "7", "techniques": ["f1"]}
    response = client.post("/benchmarks/new/", {**post, "coreset_ratio": "3"})
    assert response.status_code == 400
    assert "Ensure this value is less than or equal to 1.0" in response.content.decode()
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post("/benchmarks/new/", post)
    assert response.status_code == 302, response.content.decode()[-2000:]
    run = BenchmarkRun.objects.get()
    assert (run.model, run.seed, run.techniques) == ("patchcore", 2, ["f1"])
    # the model's own settings (defaults where blank); PaDiM's n_features is not PatchCore's
    assert run.config == {"backbone": "tf_efficientnet_lite0", "image_size": 64, "coreset_ratio": 0.05,
                          "projection_dim": 64, "num_neighbors": 9}
    page = client.get(f"/benchmarks/{run.pk}/").content.decode()
    assert "PatchCore (Patch similarity)" in page and "coreset share 0.05" in page


def test_cli_model_choices_and_setting_options_come_from_the_registry(tmp_path):
    from inference.management.commands.benchmark import Command

    parser = Command().create_parser("manage.py", "benchmark")
    actions = {a.dest: a for a in parser._actions}
    assert list(actions["model"].choices) == list(registry.MODELS)
    assert {d[len("setting_"):] for d in actions if d.startswith("setting_")} == set(registry.SETTINGS)
    with pytest.raises(CommandError, match="--n-features does not apply to PatchCore"):
        call_command("benchmark", "--data-root", str(tmp_path), "--product", "x", "--model", "patchcore",
                     "--n-features", "5", "--output", str(tmp_path / "r.json"))


def test_api_schema_lists_every_model_and_setting(tmp_path):
    target = tmp_path / "schema.yml"
    call_command("spectacular", "--file", str(target))
    text = target.read_text()
    enum = re.search(r"BenchmarkModelEnum:\n(?:.*\n)*?\s+enum:\n((?:\s+- .*\n)+)", text)
    assert enum and [line.strip()[2:] for line in enum.group(1).splitlines()] == list(registry.MODELS)
    for setting in registry.SETTINGS:
        assert setting in text


def test_recommendation_and_results_labels_come_from_the_registry():
    from inference.services import recommendation

    assert not hasattr(recommendation, "MODEL_LABELS")
    run = BenchmarkRun(model="patchcore", config={"image_size": 256, "coreset_ratio": 0.01})
    assert run.get_model_display() == "PatchCore" and run.family_label == "Patch similarity"
    assert run.settings_summary() == "image size 256, coreset share 0.01"
    # tile settings mean nothing unless the run tiles
    squash = BenchmarkRun(model="patchcore", config={"resize": "squash", "tile_size": 256})
    tiles = BenchmarkRun(model="patchcore", config={"resize": "tiles", "tile_size": 256})
    assert "tile size" not in squash.settings_summary() and "tile size 256" in tiles.settings_summary()


@pytest.mark.django_db
def test_one_launch_runs_every_ticked_model_on_the_same_images_or_none(
        client, admin_account, bench_demo, django_capture_on_commit_callbacks):
    client.force_login(admin_account)
    widget = bench_demo.products.get(name="widget")
    post = {"dataset": bench_demo.pk, "products": [widget.pk], "background": "any", "models": list(registry.MODELS),
            "seed": 0, "image_size": 64, "epochs": 3, "n_features": 20, "techniques": ["f1", "roc"]}
    response = client.post("/benchmarks/new/", {**post, "epochs": 0})
    assert response.status_code == 400 and BenchmarkRun.objects.count() == 0
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post("/benchmarks/new/", post)
    runs = list(BenchmarkRun.objects.order_by("pk"))
    assert [r.model for r in runs] == list(registry.MODELS) and len(callbacks) == len(runs)
    assert response.status_code == 302 and response["Location"].endswith(",".join(str(r.pk) for r in runs))
    assert {r.seed for r in runs} == {0} and all(r.techniques == ["f1", "roc"] for r in runs)
    by_model = {r.model: r.config for r in runs}
    assert by_model["padim"]["n_features"] == 20 and "epochs" not in by_model["padim"]
    assert by_model["cflow"]["epochs"] == 3 and by_model["reconstruction"]["epochs"] == 3
    samples = {r.model: sorted(r.product_runs.get().samples.values_list("path", "role")) for r in runs}
    assert len({tuple(v) for v in samples.values()}) == 1
    page = client.get(response["Location"]).content.decode()
    for spec in registry.MODELS.values():
        assert spec.label in page
