"""``its-ops``: operations through the Kubernetes API (training and backfill Jobs from the chart's
templates, following them, promoting a bundle to inference and rolling it back)."""
