"""m2a_ros: thin rclpy nodes over m2a_core (message conversion, QoS, parameters, diagnostics)."""
