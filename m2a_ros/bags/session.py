"""The rclpy start-up the bag command-line tools share: init, one node with its executor, clean shutdown.

    with ros_session("m2a_bag_play", ros_args) as session:
        ...  # session.node, session.executor, session.ok()
    if session.interrupted:
        ...  # Ctrl-C or an external shutdown ended the block early

rclpy is imported here, on use, so that ``--help`` and argument errors do not pay for it.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node


@dataclass
class RosSession:
    node: Node
    executor: SingleThreadedExecutor
    interrupted: bool = False

    def ok(self) -> bool:
        """False once rclpy is shutting down (Ctrl-C, SIGINT from a launch file or test)."""
        import rclpy

        return rclpy.ok()


@contextlib.contextmanager
def ros_session(node_name: str, ros_args: list[str]) -> Iterator[RosSession]:
    """rclpy initialised with ``ros_args``, a node ``node_name`` in a single-threaded executor.

    Ctrl-C and rclpy's external shutdown end the block without a traceback (``interrupted`` is then set);
    other exceptions pass through. The executor and node are destroyed and rclpy shut down in every case.
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    # Never None: rclpy would then parse sys.argv, where our own options (e.g. --remap a:=b) look like ROS rules.
    rclpy.init(args=["--ros-args", *ros_args] if ros_args else [])
    node = executor = session = None
    try:
        node = rclpy.create_node(node_name)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        session = RosSession(node, executor)
        yield session
    except (KeyboardInterrupt, ExternalShutdownException):
        if session is None:  # interrupted during start-up: nothing to report as a result
            raise
        session.interrupted = True
    finally:
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
