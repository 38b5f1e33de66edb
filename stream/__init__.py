"""The stream side: Faust worker that turns events into live customer profiles in Redis."""
