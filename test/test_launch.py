"""The launch file, the parameter file, the RViz file and the README table, as far as this machine allows.

``launch`` / ``launch_ros`` are not installable here, so the launch file is read as Python source (never
executed): it must start the executable setup.py installs, with the parameter and RViz files setup.py installs,
and set Fast DDS's large-data transports. ``ros2 launch`` itself runs only where ROS 2 is installed.
"""
from __future__ import annotations

import ast
import re
from glob import glob
from pathlib import Path

import yaml

from m2a_ros.parameters import DEFAULTS, PARAMETERS, readme_table, validate

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "anomaly.launch.py"


def _constants(tree: ast.Module) -> dict[str, object]:
    return {node.targets[0].id: node.value.value for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            and isinstance(node.targets[0], ast.Name)}


def _calls(tree: ast.Module, name: str) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) == name]


def _setup_tree() -> ast.Module:
    return ast.parse((REPO / "setup.py").read_text())


def _console_scripts() -> dict[str, str]:
    scripts = {}
    for node in ast.walk(_setup_tree()):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "=" in node.value \
                and ":" in node.value and "." in node.value:
            name, target = (part.strip() for part in node.value.split("=", 1))
            scripts[name] = target
    return scripts


def test_launch_starts_the_installed_executable_with_the_installed_config():
    tree = ast.parse(LAUNCH.read_text())
    constants = _constants(tree)
    package, executable = constants["PACKAGE"], constants["EXECUTABLE"]
    setup_constants = _constants(_setup_tree())
    assert package == setup_constants["PACKAGE"] == "m2a_ros"
    # The executable is a console script of this package whose target exists.
    scripts = _console_scripts()
    assert executable in scripts, f"{executable} is not a console script in setup.py: {scripts}"
    module, function = scripts[executable].split(":")
    assert function in dir(__import__(module, fromlist=[function]))
    # The node action names it; remaps 'image'; loads the params file argument.
    nodes = _calls(tree, "Node")
    anomaly = next(n for n in nodes if any(k.arg == "executable" and isinstance(k.value, ast.Name)
                                             and k.value.id == "EXECUTABLE" for k in n.keywords))
    keywords = {k.arg: k.value for k in anomaly.keywords}
    assert ast.literal_eval(keywords["remappings"].elts[0].elts[0]) == "image"
    # The config files it names exist and setup.py installs them to share/m2a_ros/config.
    installed = {Path(p).name for p in glob(str(REPO / "config" / "*"))}
    assert constants["PARAMS_FILE"] in installed and constants["RVIZ_FILE"] in installed
    assert 'f"share/{PACKAGE}/config", glob("config/*")' in (REPO / "setup.py").read_text()
    assert 'f"share/{PACKAGE}/launch", glob("launch/*.py")' in (REPO / "setup.py").read_text()
    # Arguments: image topic, params file, namespace, rviz on/off.
    declared = {ast.literal_eval(c.args[0]) for c in _calls(tree, "DeclareLaunchArgument")}
    assert declared == {"image", "params_file", "namespace", "rviz"}
    env = {tuple(ast.literal_eval(a) for a in c.args) for c in _calls(tree, "SetEnvironmentVariable")}
    assert ("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA") in env


def test_parameter_file_declares_every_parameter_with_its_default():
    values = yaml.safe_load((REPO / "config" / "anomaly.yaml").read_text())["/**"]["ros__parameters"]
    assert sorted(values) == sorted(p.name for p in PARAMETERS)
    for name, value in values.items():
        assert value == DEFAULTS[name], name
        assert validate(name, value) is None, name


def test_rviz_shows_the_image_topics_and_markers():
    rviz = yaml.safe_load((REPO / "config" / "anomaly.rviz").read_text())
    topics = {d["Topic"]["Value"]: d["Class"] for d in rviz["Visualization Manager"]["Displays"]}
    assert topics == {
        "/m2a_anomaly/overlay": "rviz_default_plugins/Image",
        "/m2a_anomaly/anomaly/color": "rviz_default_plugins/Image",
        "/m2a_anomaly/labels/color": "rviz_default_plugins/Image",
        "/m2a_anomaly/unknown_instances": "rviz_default_plugins/MarkerArray",
    }


def test_readme_parameter_table_is_current():
    readme = (REPO / "README.md").read_text()
    assert readme_table() in readme, "README's node parameter table differs from m2a_ros.parameters.readme_table()"
    assert re.search(r"`ros2 launch`\s+was exercised only where ROS 2 is installed", readme)
