"""Serve every flow of the loop from this process (the alternative to prefect.yaml + a worker).

    python -m flows.serve            # needs PREFECT_API_URL pointing at a Prefect server

Deployments `<flow>/serve`; nightly-iteration/serve runs on the cron of NIGHTLY_CRON (UTC).
"""

from __future__ import annotations

from prefect import serve

from flows.loop import ALL_FLOWS, nightly_iteration_flow

DEPLOYMENT_NAME = "serve"
NIGHTLY_CRON = "0 2 * * *"  # 02:00 every night


def main() -> None:
    deployments = [
        f.to_deployment(name=DEPLOYMENT_NAME, cron=NIGHTLY_CRON if f is nightly_iteration_flow else None)
        for f in ALL_FLOWS
    ]
    serve(*deployments)


if __name__ == "__main__":
    main()
