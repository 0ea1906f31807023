"""The README's promises: exactly two commands, CI runs the second, and its Python examples
(the API tour and "Write and check your own op") run as written."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def blocks(language, text=README):
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_readme_gives_exactly_two_commands_and_ci_runs_the_test_command():
    commands = [b.strip() for b in blocks("bash")]
    assert len(commands) == 2, commands
    main_job, tests = commands
    assert main_job.endswith("tinyalex train")
    assert tests.endswith("pytest")
    assert tests in (ROOT / ".ci" / "run").read_text()


def test_readme_python_examples_run(capsys):
    section = README.split("### Write and check your own op", 1)[1].split("\n## ", 1)[0]
    api_tour = README.split("## The API is PyTorch's", 1)[1].split("\n## ", 1)[0]
    namespace = {}
    for code in blocks("python", api_tour) + blocks("python", section):
        exec(compile(code, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "input 0" in printed or "random direction" in printed
