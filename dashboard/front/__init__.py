"""The pages: overview and live feed, results, recording detail, review, upload, export, admin pages."""
