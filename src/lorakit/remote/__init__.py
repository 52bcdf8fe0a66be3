"""Remote storage through rclone."""
