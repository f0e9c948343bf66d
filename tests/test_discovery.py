"""Discovery of the plugin trainers by stock nnU-Net through nnUNet_extTrainer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import nnunet_resenc_plugin_startup as startup
from nnunet_resenc_plugin.cli import main as cli_main
from nnunet_resenc_plugin.training import discovery


def clean_env(**extra: str) -> dict[str, str]:
    """Return a minimal environment without nnUNet_extTrainer, as in a fresh shell."""
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    env.update(extra)
    return env


def run_python(code: str, env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_merge_appends_to_user_folders(tmp_path):
    user = os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")])

    merged = startup.merge_trainer_folder(user, "/plugin/ext_trainer")

    assert merged.split(os.pathsep) == [str(tmp_path / "a"), str(tmp_path / "b"), "/plugin/ext_trainer"]


def test_merge_does_not_add_twice(tmp_path):
    folder = str(tmp_path / "ext")
    once = startup.merge_trainer_folder(None, folder)

    twice = startup.merge_trainer_folder(once, folder)
    with_slash = startup.merge_trainer_folder(folder + os.sep, folder)

    assert once == folder
    assert twice == folder
    assert with_slash == folder + os.sep


def test_merge_drops_empty_entries():
    merged = startup.merge_trainer_folder(os.pathsep + "/x" + os.pathsep, "/plugin")

    assert merged.split(os.pathsep) == ["/x", "/plugin"]


def test_register_respects_disable_switch():
    environ = {"nnUNet_resenc_disable_discovery": "1", "nnUNet_extTrainer": "/user"}

    startup.register_trainer_folder(environ)

    assert environ["nnUNet_extTrainer"] == "/user"


def test_register_keeps_user_folder():
    environ = {"nnUNet_extTrainer": "/user"}

    startup.register_trainer_folder(environ)

    assert environ["nnUNet_extTrainer"].split(os.pathsep) == ["/user", str(discovery.trainer_folder())]


def test_startup_and_package_agree_on_folder():
    assert Path(startup.trainer_folder()).resolve() == discovery.trainer_folder()


def test_trainer_folder_holds_only_the_shim():
    folder = discovery.trainer_folder()
    python_files = sorted(path.name for path in folder.glob("*.py"))

    assert python_files == [f"{discovery.SHIM_MODULE}.py"]
    assert not (folder / "__init__.py").exists()
    assert not [path for path in folder.iterdir() if path.is_dir() and path.name != "__pycache__"]


def test_pth_file_is_installed():
    purelib = Path(sysconfig.get_paths()["purelib"])

    assert (purelib / "nnunet_resenc_plugin.pth").is_file(), (
        "nnunet_resenc_plugin.pth is missing from site-packages; reinstall with `pip install -e .`")


def test_fresh_interpreter_sets_variable():
    output = run_python("import os; print(os.environ.get('nnUNet_extTrainer'))", clean_env())

    assert output.strip() == str(discovery.trainer_folder())


def test_fresh_interpreter_keeps_user_value(tmp_path):
    output = run_python("import os; print(os.environ['nnUNet_extTrainer'])",
                        clean_env(nnUNet_extTrainer=str(tmp_path)))

    assert output.strip().split(os.pathsep) == [str(tmp_path), str(discovery.trainer_folder())]


def test_child_process_does_not_add_twice():
    code = ("import os, subprocess, sys; "
            "print(subprocess.run([sys.executable, '-c', \"import os; print(os.environ['nnUNet_extTrainer'])\"], "
            "capture_output=True, text=True).stdout.strip())")

    output = run_python(code, clean_env())

    assert output.strip() == str(discovery.trainer_folder())


# Runs nnU-Net's own trainer lookup and reports what it found, in a fresh interpreter.
LOOKUP_CODE = """
import contextlib, io, json, pickle, sys
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
with contextlib.redirect_stdout(io.StringIO()):
    found = {name: recursive_find_trainer_class_by_name(name)
             for name in ("nnUNetTrainerResEnc", "nnUNetTrainerResEnc_1epoch")}
from nnunet_resenc_plugin.training import trainers
print(json.dumps({
    "modules": {name: cls.__module__ for name, cls in found.items()},
    "same_class": all(cls is getattr(trainers, name) for name, cls in found.items()),
    "pickles": pickle.loads(pickle.dumps(found["nnUNetTrainerResEnc"])) is trainers.nnUNetTrainerResEnc,
    "trainer_modules": sorted(name for name, module in sys.modules.items()
                              if module is not None and getattr(module, "__file__", None)
                              and module.__file__.endswith("trainers.py")
                              and "nnunet_resenc_plugin" in module.__file__),
    "shim_loaded": "nnunet_resenc_plugin_trainers" in sys.modules,
}))
"""


def test_nnunet_finds_trainers_once():
    report = json.loads(run_python(LOOKUP_CODE, clean_env()).strip().splitlines()[-1])

    assert report["modules"] == {"nnUNetTrainerResEnc": "nnunet_resenc_plugin.training.trainers",
                                 "nnUNetTrainerResEnc_1epoch": "nnunet_resenc_plugin.training.trainers"}
    assert report["same_class"] is True
    assert report["pickles"] is True
    assert report["trainer_modules"] == ["nnunet_resenc_plugin.training.trainers"]
    assert report["shim_loaded"] is False


def test_nnunet_searches_user_folder_first(tmp_path):
    (tmp_path / "my_trainers.py").write_text(
        "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer\n"
        "class MyTrainer(nnUNetTrainer):\n    pass\n")
    code = ("import contextlib, io\n"
            "from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    mine, plugin = find('MyTrainer'), find('nnUNetTrainerResEnc')\n"
            "print(mine.__name__, plugin.__module__)\n")

    output = run_python(code, clean_env(nnUNet_extTrainer=str(tmp_path)))

    assert output.split() == ["MyTrainer", "nnunet_resenc_plugin.training.trainers"]


def test_env_command_prints_export_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("nnUNet_extTrainer", str(tmp_path))

    code = cli_main(["env"])

    line = capsys.readouterr().out.strip()
    assert code == 0
    assert line.startswith("export nnUNet_extTrainer=")
    value = line.split("=", 1)[1].strip("'")
    assert value.split(os.pathsep) == [str(tmp_path), str(discovery.trainer_folder())]


def test_env_command_output_works_in_shell(tmp_path):
    command = Path(sys.executable).parent / "nnunet-resenc"
    script = f"eval \"$({command} env)\"; printf '%s' \"$nnUNet_extTrainer\""
    env = clean_env(nnUNet_resenc_disable_discovery="1")

    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert result.stdout == str(discovery.trainer_folder())
