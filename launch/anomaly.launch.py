"""ros2 launch m2a_ros anomaly.launch.py image:=/camera/front/image_raw [params_file:=...] [namespace:=...] [rviz:=true]

Starts the m2a_anomaly node (installed executable ``m2a_anomaly_node``) with ``config/anomaly.yaml`` and, on
request, RViz with ``config/anomaly.rviz``. Sets Fast DDS's large-data builtin transports: camera frames of
1 MB and more published best-effort between processes arrive reliably only with them.
"""
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

PACKAGE = "m2a_ros"
EXECUTABLE = "m2a_anomaly_node"
PARAMS_FILE = "anomaly.yaml"
RVIZ_FILE = "anomaly.rviz"


def generate_launch_description() -> LaunchDescription:
    config = PathJoinSubstitution([FindPackageShare(PACKAGE), "config"])
    return LaunchDescription([
        DeclareLaunchArgument("image", default_value="/camera/image_raw", description="camera image topic"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([config, PARAMS_FILE]),
                              description="node parameters (YAML)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("rviz", default_value="false", description="also start RViz"),
        SetEnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA"),
        Node(
            package=PACKAGE,
            executable=EXECUTABLE,
            name="m2a_anomaly",
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("params_file")],
            remappings=[("image", LaunchConfiguration("image"))],
            output="screen",
        ),
        Node(
            package="rviz2",
            executable="rviz2",
            name="rviz2",
            arguments=["-d", PathJoinSubstitution([config, RVIZ_FILE])],
            condition=IfCondition(LaunchConfiguration("rviz")),
        ),
    ])
