"""m2a: Mask2Anomaly for ROS 2.

One package, two import roots: ``m2a_core`` (pure PyTorch library, no ROS) and
``m2a_ros`` (rclpy nodes over it). Installs with pip (development, CI) and with
colcon (ament_python, on a vehicle): the data_files put the package marker,
package.xml, launch and config files where ``ros2 launch`` looks for them.
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "m2a_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Mask2Anomaly anomaly, open-set semantic and open-set panoptic segmentation for ROS 2",
    license="MIT",
    packages=find_packages(include=["m2a_core", "m2a_core.*", "m2a_ros", "m2a_ros.*"]),
    python_requires=">=3.10",
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*")),
    ],
    # torch is not listed: it must be installed first with a pinned, platform-appropriate
    # build (CPU wheel in dev/CI, JetPack or CUDA wheel on a vehicle); listing it lets pip
    # resolve an unpinned torch with gigabytes of CUDA packages.
    install_requires=[
        "numpy>=1.24",
        "pillow>=9.0",
        "safetensors>=0.4",
        "scipy>=1.10",
        "tqdm>=4.60",
        "pyyaml>=6.0",
        "matplotlib>=3.6",
    ],
    extras_require={
        "onnx": ["onnx>=1.15", "onnxruntime>=1.17"],
        "bags": ["rosbags>=0.9.20"],
        "test": [
            "pytest>=7.0",
            "scikit-learn>=1.3",
            "onnx>=1.15",
            "onnxruntime>=1.17",
            "rosbags>=0.9.20",
            "ruff>=0.5",
        ],
    },
    entry_points={
        "console_scripts": [
            "m2a = m2a_core.cli:main",
            "m2a_anomaly_node = m2a_ros.anomaly_node:main",
            "m2a_bench_node = m2a_ros.bench_node:main",
            "m2a_bag_eval = m2a_ros.bags.evaluate:main",
            "m2a_bag_make_sample = m2a_ros.bags.sample:main",
            "m2a_bag_play = m2a_ros.bags.play:main",
            "m2a_bag_record = m2a_ros.bags.record:main",
        ],
    },
    zip_safe=True,
)
