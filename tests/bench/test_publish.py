"""`python -m bench` publishes its run to results/latest/ without deleting what the other benches keep there."""
import importlib

bench_main = importlib.import_module("bench.__main__")


def test_publish_when_latest_holds_other_benches_files_then_they_stay_and_the_run_replaces_its_own(tmp_path,
                                                                                                    monkeypatch):
    monkeypatch.setattr(bench_main, "RESULTS_DIR", tmp_path)
    latest = tmp_path / "latest"
    latest.mkdir()
    (latest / "persistence.json").write_text("kept")
    (latest / "e2e.json").write_text("old run")
    run = tmp_path / "20261203-220000"
    run.mkdir()
    (run / "e2e.json").write_text("new run")
    (run / "report.md").write_text("report")

    assert bench_main.publish(run) == latest
    assert {p.name: p.read_text() for p in latest.iterdir()} == {
        "persistence.json": "kept", "e2e.json": "new run", "report.md": "report"}
