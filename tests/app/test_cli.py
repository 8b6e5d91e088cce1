"""The ``covrag`` CLI in process: ingest files, calibrate from a QA file, evaluate coverage and
answers, label self-practice rounds (against the real vLLM worker)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from app.cli.commands import cli
from app.cli.demo import DEMO_CALIBRATION, QUICKSTART_DOC, QUICKSTART_QUESTION, first_try
from app.config import Settings, get_settings
from app.services import build_ingestor, build_store
from retrieval.calibration import load_calibration
from retrieval.embed import Embedder
from retrieval.rerank import OnnxReranker
from retrieval.types import Document
from tests import documents as files
from tests.conftest import REPO

DEV_QA = Path(__file__).resolve().parents[2] / "data" / "qa" / "dev.jsonl"


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("COVRAG_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_ingest_calibrate_and_eval_coverage_and_answers(
    runner: CliRunner,
    tmp_path: Path,
    wiki_docs: list[Document],
    generator_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = [json.loads(line) for line in DEV_QA.read_text().splitlines()]
    singles = [r for r in rows if r["type"] == "single"][:40]
    wanted = {r["gold_titles"][0] for r in singles}
    docs = [d for d in wiki_docs if d.id in wanted] + wiki_docs[::500]
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text(
        "".join(json.dumps({"id": d.id, "title": d.title, "text": d.text}) + "\n" for d in docs)
    )
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps(r) + "\n" for r in singles) + "{broken\n")

    result = runner.invoke(cli, ["ingest", str(corpus), "--local"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["added"] == len(docs)

    result = runner.invoke(cli, ["calibrate", "--from-qa", str(qa), "--local"])
    assert result.exit_code == 0, result.output
    assert "qa.jsonl:41" in result.stderr  # the broken line, by number; the rest was used
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["n"], summary["version"], summary["misses"]) == (40, 1, 0)
    assert set(summary["thresholds"]) == {"0.05", "0.1", "0.2"}

    out = tmp_path / "data" / "eval" / "coverage"  # no --out: under the data dir
    result = runner.invoke(
        cli, ["eval", "coverage", "--qa", str(qa), "--splits", "20", "--cal-sizes", "19"]
    )
    assert result.exit_code == 0, result.output
    assert {"coverage.json", "coverage.md", "mondrian_kinds.png"} <= {p.name for p in out.iterdir()}
    assert list(out.glob("*.png"))
    assert "| 0.1 |" in (out / "coverage.md").read_text()

    # eval qa on two questions, one the pipeline refuses (over COVRAG_MAX_QUESTION_CHARS) and
    # one vLLM rejects (within the limit, but 6,000 tokens: over the model's context). Both are
    # left out of every mode, not the run.
    monkeypatch.setenv("COVRAG_GENERATOR_URLS", generator_url)
    monkeypatch.setenv("COVRAG_CRITIC", "features")
    get_settings.cache_clear()
    refused = {"id": "refused", "type": "single", "answers": ["x"], "question": "Why? " * 1000}
    smiles = "\U0001f642" * 3000  # two tokens each
    rejected = {"id": "rejected", "type": "single", "answers": ["x"], "question": smiles}
    asked = tmp_path / "asked.jsonl"
    asked.write_text("".join(json.dumps(r) + "\n" for r in [*singles[:2], refused, rejected]))
    out = tmp_path / "qa"
    result = runner.invoke(cli, ["eval", "qa", "--qa", str(asked), "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "qa.json").read_text())
    assert report["meta"]["left_out"] == ["refused", "rejected"]
    errors = {(f["qid"], f["mode"]): f["error"].split(":")[0] for f in report["failures"]}
    assert errors == {
        (qid, mode): error
        for qid, error in (("refused", "InvalidQuery"), ("rejected", "GeneratorRejected"))
        for mode in ("naive", "single", "conformal", "full")
    }
    assert "left out rejected (single): GeneratorRejected" in result.stderr
    rows = report["results"]
    assert sorted((r["qid"], r["mode"]) for r in rows) == sorted(
        (q["id"], m) for q in singles[:2] for m in ("naive", "single", "conformal", "full")
    )
    for mode, cost in report["cost"]["modes"].items():
        mine = [r for r in rows if r["mode"] == mode]
        assert cost["questions"] == 2
        assert cost["correct"] == sum(r["right"] for r in mine)
        assert cost["totals"]["llm_calls"] == sum(r["llm_calls"] for r in mine)
        assert cost["totals"]["prompt_tokens"] == sum(r["prompt_tokens"] for r in mine) > 0
        assert cost["per_question"]["wall_s"] > 0
    assert report["cost"]["modes"]["naive"]["totals"]["llm_calls"] == 2
    assert report["cost"]["ratios"]["full_vs_naive_wall"] > 0
    right = {(r["mode"], r["qid"]): r["right"] for r in rows}
    for mode in ("single", "conformal", "full"):
        split = report["cost"]["paired"][f"{mode}_vs_naive"]
        assert split["questions"] == 2
        assert split["right"]["only_this"] == sum(
            right[mode, q["id"]] and not right["naive", q["id"]] for q in singles[:2]
        )
        assert 0 < split["right"]["sign_test_p"] <= 1
    curve = report["summary"]["full"]["risk_coverage"]
    assert curve["coverage"][-1] == 1.0 and len(curve["accuracy"]) == 2
    assert "| wall s / right |" in (out / "qa.md").read_text()
    assert (out / "qa.png").stat().st_size > 0

    # selfpractice labels every round of the two answerable questions, and resumes: a second
    # run over the same file skips both.
    practice = tmp_path / "practice.jsonl"
    two = tmp_path / "two.jsonl"
    two.write_text("".join(json.dumps(r) + "\n" for r in singles[:2]))
    args = ["selfpractice", "--qa", str(two), "--out", str(practice), "--rounds", "1"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    labelled = [json.loads(line) for line in practice.read_text().splitlines()]
    assert (report["questions"], report["failed"], report["rows"]) == (2, 0, len(labelled))
    assert {r["qid"] for r in labelled} == {q["id"] for q in singles[:2]}
    assert report["positives"] == sum(r["label"] for r in labelled)
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["skipped_done"] == 2


def test_ingest_past_the_threshold_builds_the_index(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the server does after an ingestion job: the first ingestion that reaches
    ``COVRAG_INDEX_THRESHOLD`` chunks builds the index; one that writes nothing new does not."""
    monkeypatch.setenv("COVRAG_INDEX_THRESHOLD", "3")
    get_settings.cache_clear()
    corpus = tmp_path / "docs.jsonl"
    rows = [{"id": f"d{i}", "text": f"Short document number {i}."} for i in range(4)]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))

    def ingest() -> str:
        result = runner.invoke(cli, ["ingest", str(corpus), "--local"])
        assert result.exit_code == 0, result.output
        return result.stderr

    def indexed() -> tuple[int, int]:
        store = build_store(get_settings().store)
        try:
            info = store.get_collection("wiki")
        finally:
            store.close()
        return info.chunks, info.indexed

    assert "indexing" not in ingest()  # 2 chunks: under the threshold
    assert indexed() == (2, 0)
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert "indexing wiki" in ingest()
    assert indexed() == (4, 4)
    assert "indexing" not in ingest()  # unchanged documents: nothing unindexed


def test_calibrate_keeps_the_rules_of_the_api(runner: CliRunner, tmp_path: Path) -> None:
    """No default alpha the calibration cannot support, no much smaller calibration unasked
    (issue #25): each refusal one line, and nothing replaced."""
    doc = {"id": "tower", "text": "The Eiffel Tower in Paris was completed in 1889."}
    (tmp_path / "docs.jsonl").write_text(json.dumps(doc) + "\n")
    assert runner.invoke(cli, ["ingest", str(tmp_path / "docs.jsonl"), "--local"]).exit_code == 0

    def calibrate(n: int, *options: str) -> Result:
        qa = tmp_path / f"qa{n}.jsonl"
        row = {"question": "When was the tower completed?", "answers": ["1889"]}
        qa.write_text("".join(json.dumps({**row, "id": f"q{i}"}) + "\n" for i in range(n)))
        return runner.invoke(cli, ["calibrate", "--from-qa", str(qa), "--local", *options])

    assert calibrate(4, "--default-alpha", "0.2").exit_code == 0
    refused = calibrate(1, "--default-alpha", "0.1", "--replace-smaller")
    assert refused.exit_code == 2 and "default_alpha=0.1" in refused.stderr
    refused = calibrate(1, "--default-alpha", "0.5")
    assert refused.exit_code == 2 and "--replace-smaller" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    done = calibrate(1, "--default-alpha", "0.5", "--replace-smaller")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout.strip().splitlines()[-1])["version"] == 2


def test_calibrate_needs_exactly_one_source(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["calibrate"])
    assert result.exit_code != 0
    assert "exactly one of --from-qa or --generate" in result.output


@pytest.mark.parametrize("content", [None, "{not json", '{"version": 1}'])
def test_serve_refuses_to_start_with_missing_or_corrupt_critic_weights(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | None
) -> None:
    weights = tmp_path / "features.json"
    if content is not None:
        weights.write_text(content)
    monkeypatch.setenv("COVRAG_CRITIC", "features")
    monkeypatch.setenv("COVRAG_CRITIC_WEIGHTS", str(weights))
    get_settings.cache_clear()

    result = runner.invoke(cli, ["serve", "--port", "1"])

    assert result.exit_code == 2
    assert "refusing to start" in result.output
    assert str(weights.name) in result.output


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "No such file"),
        ("{not json", "Expecting property name"),
        ('[{"name": "a"}]', "exactly one of key and sha256"),
        ('[{"name": "a", "key": "x"}, {"name": "a", "key": "y"}]', "unique"),
    ],
)
def test_serve_refuses_to_start_with_a_bad_keys_file(
    runner: CliRunner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    content: str | None,
    says: str,
) -> None:
    keys = tmp_path / "keys.json"
    if content is not None:
        keys.write_text(content)
    monkeypatch.setenv("COVRAG_API_KEYS_FILE", str(keys))
    get_settings.cache_clear()

    result = runner.invoke(cli, ["serve", "--port", "1"])

    assert result.exit_code == 2
    assert "refusing to start" in result.output and says in result.output


def test_serve_suggests_a_first_question_about_what_the_store_holds(
    tmp_path: Path, wiki_docs: list[Document], embedder: Embedder
) -> None:
    """The Melbourne question only when the demo article is in the default collection; else
    one about a document the user ingested (naming its collection when not the default);
    nothing to ask when nothing is ingested."""
    settings = Settings(store={"data_dir": tmp_path / "data"})
    url = "http://127.0.0.1:8080"

    def ingest(name: str, doc: Document) -> None:
        store = build_store(settings.store)
        try:
            build_ingestor(settings.collections, store, embedder).ingest(name, [doc])
        finally:
            store.close()

    assert first_try(settings, url).startswith("no collection holds documents yet")
    leave = Document(
        id="leave.md",
        title="Annual leave policy",
        text="Full-time employees receive 25 days of paid annual leave per calendar year.",
    )
    ingest("policies", leave)
    said = first_try(settings, url)
    body = {"question": "What does Annual leave policy say?", "collection": "policies"}
    assert json.dumps(body) in said and "Melbourne" not in said
    ingest("wiki", next(d for d in wiki_docs if d.id == "Eiffel Tower"))
    said = first_try(settings, url)
    assert json.dumps({"question": "What does Eiffel Tower say?"}) in said
    ingest("wiki", next(d for d in wiki_docs if d.id == QUICKSTART_DOC))
    assert json.dumps({"question": QUICKSTART_QUESTION}) in first_try(settings, url)


def test_ingest_reads_documents_with_their_pages(
    runner: CliRunner, tmp_path: Path, embedder: Embedder
) -> None:
    (tmp_path / "two.pdf").write_bytes(
        files.pdf([("Tides", "Tides follow the Moon."), ("Winds", "Trade winds blow west.")])
    )
    (tmp_path / "manual.docx").write_bytes(files.manual_docx())
    (tmp_path / "page.html").write_bytes(files.saved_web_page())
    paths = [str(tmp_path / n) for n in ("two.pdf", "manual.docx", "page.html")]
    result = runner.invoke(cli, ["ingest", *paths, "--local", "--collection", "mine"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["added"] == 3
    again = runner.invoke(cli, ["ingest", *paths, "--local", "--collection", "mine"])
    assert json.loads(again.stdout)["unchanged"] == 3

    store = build_store(get_settings().store)
    try:
        vector = embedder.embed(["Which way do the trade winds blow?"])[0]
        [hit] = store.search("mine", vector, limit=1)
    finally:
        store.close()
    assert (hit.source, hit.page) == (paths[0], 2)

    (tmp_path / "sheet.xlsx").write_bytes(b"PK\x03\x04")
    refused = runner.invoke(cli, ["ingest", str(tmp_path / "sheet.xlsx"), "--local"])
    assert refused.exit_code == 2
    assert f"{tmp_path / 'sheet.xlsx'}: unsupported file type '.xlsx'" in refused.stderr


def test_the_demo_calibration_set_is_the_checkouts() -> None:
    assert DEMO_CALIBRATION == REPO / "data" / "qa" / "calib.jsonl" and DEMO_CALIBRATION.is_file()


def test_train_a_reranker_then_calibrate_with_it(
    runner: CliRunner, tmp_path: Path, wiki_sample: list[Document]
) -> None:
    """The user's path: train on their QA file, calibrate again, and the calibration holds the
    reranker's scores (so `rerank` requests have a threshold)."""
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"id": d.id, "title": d.title, "text": d.text}) + "\n" for d in wiki_sample
        )
    )
    qa = tmp_path / "qa.jsonl"
    qa.write_text(
        "".join(
            json.dumps({"id": d.id, "question": f"What is {d.title}?", "gold_doc_ids": [d.id]})
            + "\n"
            for d in wiki_sample[:20]
        )
    )
    assert runner.invoke(cli, ["ingest", str(corpus), "--local"]).exit_code == 0
    refused = runner.invoke(cli, ["train-reranker"])
    assert refused.exit_code == 2 and "--from-qa FILE, --generate N" in refused.output
    args = ["train-reranker", "--from-qa", str(qa), "--layers", "1", "--epochs", "1"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "calibrate wiki again" in result.stderr
    trained = json.loads(result.stdout.strip().splitlines()[-1])
    model_dir = Path(trained["model_dir"])
    assert model_dir == get_settings().store.models_dir / "reranker"
    assert (trained["qa_files"], trained["layers"]) == (["qa.jsonl"], 1)

    result = runner.invoke(cli, ["calibrate", "--from-qa", str(qa), "--local"])
    assert result.exit_code == 0, result.output
    store = build_store(get_settings().store)
    try:
        calibration = load_calibration(store, "wiki")
    finally:
        store.close()
    assert calibration is not None
    assert calibration.rerank_version == OnnxReranker(model_dir).version
    assert len(calibration.rerank_scores) == 20
