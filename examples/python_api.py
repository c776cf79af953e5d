# %% [markdown]
# # nres from Python: train, resume, read back, evaluate, plot
#
# A notebook in script form (cells start with `# %%`; VS Code, PyCharm and Jupytext
# open it as a notebook). Every call writes or reads the same run directory as the
# command line (`nres train`, `nres eval`, `nres plot`): a run started here can be
# resumed with `nres train --resume`, and the other way round.
#
# Run it as a script: `python examples/python_api.py` (about half a minute on a laptop).

# %%
import pathlib
import tempfile

import nres

HERE = pathlib.Path(__file__).resolve().parent
TASK = f"{HERE / 'custom_task.py'}:ENTRY"  # a task given by path; its TaskEntry is named "custom"


def main(out: str | None = None, iterations: int = 200) -> nres.RunView:
    out = pathlib.Path(out or tempfile.mkdtemp(prefix="nres-api-")) / "custom-pes"

    # %% Train: settings as keyword arguments (or a dict, a TrainConfig, a TOML/YAML file).
    # The task's own training defaults apply under them, as on the command line.
    run = nres.train(task=TASK, estimator="pes", iterations=iterations // 2, eval_every=50, out=out,
                     progress=False)
    print(run)

    # %% Resume the same directory for more updates (only `iterations` may change).
    run = nres.train(resume=run.path, iterations=iterations, progress=False)

    # %% Read it back: config, metrics as NumPy columns, the saved thetas.
    run = nres.load_run(run.path)
    print("estimator:", run.config["estimator"], "| d =", run.facts["theta_size"])
    train = run.metrics("train")  # {"iteration": int64[updates], "train_loss": float64[updates], ...}
    tests = run.metrics("eval")  # one row per evaluated update: test_loss
    print(f"train loss {train['train_loss'][:10].mean():.4f} (first 10 updates) -> "
          f"{train['train_loss'][-10:].mean():.4f} (last 10)")
    print("test loss by update:", dict(zip(tests["iteration"].tolist(), tests["test_loss"].round(4).tolist())))
    iterations_saved, thetas = run.thetas()  # [M] and M pytrees shaped like the task's theta
    print(f"{len(thetas)} thetas saved; final theta = {thetas[-1]}")

    # %% Evaluate every 50th saved theta (as `nres eval --all --stride 50`) and draw the curves.
    run.evaluate(every_saved=True, stride=50)
    print("curves:", run.plot())
    return run


if __name__ == "__main__":
    main()
