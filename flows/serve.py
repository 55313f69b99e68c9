"""Serve every flow of the loop from this process (the alternative to prefect.yaml + a worker).

    python -m flows.serve            # needs PREFECT_API_URL pointing at a Prefect server

Deployments `<flow>/serve`; nightly-iteration/serve runs on the cron of NIGHTLY_CRON (UTC), with the
parameters of prefect.yaml's nightly deployment.
"""

from __future__ import annotations

from prefect import serve

from flows.loop import ALL_FLOWS, nightly_iteration_flow

DEPLOYMENT_NAME = "serve"
NIGHTLY_CRON = "0 2 * * *"  # 02:00 every night
NIGHTLY_PARAMETERS = {"resume": True}  # as in prefect.yaml: later nights keep the run's first settings


def main() -> None:
    deployments = [
        f.to_deployment(name=DEPLOYMENT_NAME, cron=NIGHTLY_CRON, parameters=NIGHTLY_PARAMETERS)
        if f is nightly_iteration_flow
        else f.to_deployment(name=DEPLOYMENT_NAME)
        for f in ALL_FLOWS
    ]
    serve(*deployments)


if __name__ == "__main__":
    main()
