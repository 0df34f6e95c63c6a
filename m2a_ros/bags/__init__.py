"""Bag tools: offline and live evaluation over rosbag2 bags (m2a_bag_eval), playback (m2a_bag_play), recording
(m2a_bag_record). Bag I/O with rosbags (storage), the node's per-frame work reused outside a node (pipeline)."""
