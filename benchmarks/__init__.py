"""Speed measurements (not tests): each module prints figures, the last line one JSON object."""
