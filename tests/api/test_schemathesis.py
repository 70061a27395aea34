"""Schemathesis against the app's own OpenAPI schema (issue 13): with an admin's valid token, no
request it generates gets a server error, an undocumented status code, an undocumented content
type or a body that does not match the documented schema.

What runs is what ``schemathesis run`` runs (its engine: the coverage phase's boundary and invalid
values for every parameter and body field, unexpected methods, then a fuzzing pass), in-process
against the WSGI application on the test database: no server, no network. The schema is the one
``/api/schema/`` serves. The endpoints get real objects: a small dataset with disagreeing labels,
a PaDiM fitted on it and deployed (twice, so a rollback has somewhere to go), an inspection, a
queued run; the ids Hypothesis draws for paths, query parameters and bodies are swapped for the
ids of those objects half of the time, so that requests get past their 404.

Bounded: a fixed seed, MAX_EXAMPLES per operation in the fuzzing phase, no shrinking; about 45 s of
requests and 10 s of set-up on a loaded 2-core machine. BUDGET_S is a ceiling, not a target: a run
that reaches it is stopped and the test fails (an endpoint got slow, or the settings here grew).

No operation is excluded. Launching and retrying runs and starting batch inspections create their
rows for real, but their Celery task is only recorded: nothing trains a model in the background or
leaves a message on the broker.
"""
import time

import pytest
import schemathesis
from hypothesis import strategies as st

from tests.api.labelling_factory import _png, make_dataset

CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance"]
MAX_EXAMPLES = 8
BUDGET_S = 240


@pytest.fixture
def api_world(transactional_db, tmp_path, settings, make_user, monkeypatch):
    """Committed objects (the engine calls the app from worker threads, on their own connections)."""
    from rest_framework.authtoken.models import Token

    from annotator.models import Label
    from annotator.services import queue
    from annotator.services.references import compute_references
    from inference.models import Status
    from inference.services import deploy, runs
    from inference.services.execution import execute_product_run

    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.BENCHMARK_HEARTBEAT_SECONDS = 0  # the run fitted below: no heartbeat thread of its own
    sent = []
    monkeypatch.setattr(runs, "enqueue_run", lambda run_id: sent.append(("run", run_id)))
    monkeypatch.setattr(deploy, "_enqueue", lambda job_id: sent.append(("inspection", job_id)))

    dataset = make_dataset(tmp_path, overlap=2)
    admin = make_user("ada", role="admin", is_staff=True, is_superuser=True)
    ann, bob = make_user("ann", role="annotator"), make_user("bob", role="annotator")
    widget, fabric = dataset.products.get(name="widget"), dataset.products.get(name="fabric")
    # A launch needs two defect-free test images (one per part of its split); the factory makes one.
    extra = widget.images.get(split="test", is_anomalous=False)
    extra.pk, extra.path = None, "widget/test/good/001.png"
    extra.checksum = _png(tmp_path / dataset.name / extra.path, (40, 70, 95))
    extra.save()
    for product in (widget, fabric):
        compute_references(product.pk)  # done now, so the workspace queues no Celery task for them
    # Two annotators who disagree on the cracks: the review list and the agreement have something.
    for image in widget.images.filter(is_anomalous=True).order_by("pk"):
        queue.submit_label(user=ann, image=image, background=True, category="structural")
        queue.submit_label(user=bob, image=image, background=True,
                           category="surface" if image.defect_type == "crack" else "structural")
    own = queue.submit_label(user=admin, image=fabric.images.filter(is_anomalous=True).first(),
                             background=False, category="contamination")
    # A small PaDiM fitted on widget and deployed twice (so there is a deployment to roll back to),
    # an inspection of one image with it, and a second run left queued (to cancel and retry).
    small = {"image_size": 64, "batch_size": 32, "n_features": 50}
    fitted = runs.launch_run(admin, dataset, [widget], model="padim", config=small, seed=1)
    part = fitted.product_runs.get()
    assert execute_product_run(part.pk, finalize=True) == Status.SUCCEEDED
    part.refresh_from_db()
    techniques = sorted(deploy.deployable_techniques(part))
    first = deploy.deploy(part, techniques[0], admin)
    deploy.deploy(part, techniques[-1], admin)
    image = widget.images.filter(is_anomalous=True).first()
    job = deploy.inspect_uploads(widget, [deploy.Upload(name="new.png", source=image.file_path)], admin)
    queued = runs.launch_run(admin, dataset, [widget], model="padim", config=small, seed=2)
    return {
        "token": Token.objects.create(user=admin).key,
        "ids": {
            "datasets": [dataset.pk],
            "dataset_names": [dataset.name],
            "products": [widget.pk, fabric.pk],
            "images": list(dataset.products.values_list("images__pk", flat=True)),
            # The admin's own label (may be changed) and two of others (readable, not changeable).
            "labels": [own.pk, *Label.objects.exclude(pk=own.pk).values_list("pk", flat=True)[:2]],
            "runs": [fitted.pk, queued.pk],
            "deployments": [first.pk],
            "inspections": [job.pk],
        },
    }


# Which objects an id names: in the path by path prefix (and name), in the query and body by name.
PATH_IDS = [("/api/datasets/", "datasets"), ("/api/benchmarks/products/", "products"), ("/api/images/", "images"),
            ("/api/review/", "images"), ("/api/labels/", "labels"), ("/api/benchmarks/runs/", "runs"),
            ("/api/inspections/", "inspections"), ("/api/products/", "products")]
FIELD_IDS = {"dataset": "datasets", "product": "products", "products": "products", "image": "images",
             "run": "runs", "deployment": "deployments"}


def closing(app):
    """The WSGI application, its responses read and closed as a WSGI server does.

    Schemathesis' WSGI transport reads a response without closing it, so Django never sends
    request_finished and a worker thread's database connection would outlive the test (and keep
    PostgreSQL from dropping the test database).
    """
    def application(environ, start_response):
        response = app(environ, start_response)
        try:
            return [b"".join(response)]
        finally:
            response.close()

    return application


def load_schema(world):
    from django.core.wsgi import get_wsgi_application

    headers = {"Authorization": f"Token {world['token']}"}
    config = schemathesis.Config.from_dict({
        "seed": 13,
        "cache": {"enabled": False},  # no .schemathesis/ left behind, nothing carried between runs
        "headers": headers,
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "no-shrink": True, "database": "none"},
        # The schema declares no links for stateful sequences to follow: off, so that none inferred
        # can stretch the run. The coverage and fuzzing phases reach every operation.
        "phases": {"stateful": {"enabled": False}},
    })
    schema = schemathesis.openapi.from_wsgi("/api/schema/", closing(get_wsgi_application()), config=config,
                                            headers=headers)
    ids = world["ids"]

    def known(kind, value):
        """A strategy for one of the seeded ids of ``kind`` in place of ``value`` (a list for a list)."""
        one = st.sampled_from(ids[kind])
        return st.lists(one, min_size=1, max_size=2) if isinstance(value, list) else one

    def sometimes_known(values, kinds):
        """``values`` as generated, or with the named ids replaced by seeded ones (half and half)."""
        if not isinstance(values, dict) or not kinds:
            return st.just(values)
        replaced = st.fixed_dictionaries({name: known(kind, values[name]) for name, kind in kinds.items()})
        return st.one_of(replaced.map(lambda new: {**values, **new}), st.just(values))

    @schema.hook("flatmap_path_parameters")
    def known_ids_in_path(context, path_parameters):
        path, kinds = context.operation.path, {}
        for name in path_parameters or {}:
            if name == "deployment":
                kinds[name] = "deployments"
            elif prefix_kind := next((kind for prefix, kind in PATH_IDS if path.startswith(prefix)), None):
                kinds[name] = prefix_kind
        return sometimes_known(path_parameters, kinds)

    @schema.hook("flatmap_query")
    def known_ids_in_query(context, query):
        return sometimes_known(query, {name: FIELD_IDS[name] for name in query or {} if name in FIELD_IDS})

    @schema.hook("flatmap_body")
    def known_ids_in_body(context, body):
        if not isinstance(body, dict):
            return st.just(body)
        if context.operation.path == "/api/labels-import/":  # names its dataset by name
            return sometimes_known(body, {"dataset": "dataset_names"} if "dataset" in body else {})
        return sometimes_known(body, {name: FIELD_IDS[name] for name in body if name in FIELD_IDS})

    return schema


@pytest.mark.django_db(transaction=True)
def test_every_answer_is_documented_and_none_is_a_server_error(api_world):
    from schemathesis.engine import Status, events, from_schema

    schema = load_schema(api_world)
    operations = {result.ok().label for result in schema.get_all_operations()}
    problems, statuses = [], {}
    stream = from_schema(schema).execute()
    deadline = time.monotonic() + BUDGET_S
    for event in stream:
        if time.monotonic() > deadline and not isinstance(event, events.EngineFinished):
            stream.stop()
            problems.append(f"The run took longer than {BUDGET_S} s and was stopped.")
        if isinstance(event, events.ScenarioFinished):
            method = event.recorder.label.split()[0]
            for interaction in event.recorder.interactions.values():
                # Not the OPTIONS/TRACE/... the coverage phase sends to see them refused.
                if interaction.response is not None and interaction.request.method == method:
                    statuses.setdefault(event.recorder.label, set()).add(interaction.response.status_code)
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        failure = check.failure_info.failure
                        problems.append(f"{event.recorder.label}: {failure.title}\n{failure.message}\n"
                                        f"{check.failure_info.code_sample}")
        elif isinstance(event, events.NonFatalError):
            problems.append(f"{event.label}: {event.info.title}\n{event.info.message}")
        elif isinstance(event, events.FatalError):
            problems.append(f"Schemathesis stopped: {event.exception!r}")
    assert not problems, "\n\n".join(dict.fromkeys(problems))
    # The run reached every operation, with the token accepted (no 401) and real objects found.
    assert set(statuses) == operations, operations - set(statuses)
    assert not [label for label, codes in statuses.items() if 401 in codes and label != "POST /api/auth/token/"]
    # Every read found its objects at least once (writes may be refused every time: an inspection
    # needs real image files, a token a real password).
    answered = {label for label, codes in statuses.items() if codes & {200, 302}}
    assert not {label for label in operations - answered if label.startswith("GET ")}, operations - answered
