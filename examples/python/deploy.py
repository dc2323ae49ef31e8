"""Deploy a server (simulated, no network): create a droplet, poll until it
has an IP, connect over "SSH" with retries, then configure DNS and install
the app in parallel, and notify.

Run it locally:   python deploy.py
In the engine:    cerebelum build deploy.py -o deploy.wasm
                  cerebelum run deploy.wasm deploy --input '{"name": "web-1"}'
"""

import asyncio
import json
from typing import Any

from cerebelum import Context, ProgressReporter, WorkflowBuilder, poll, retry, sleep, step, workflow

Data = dict[str, Any]  # a JSON object


@step
async def create_droplet(context: Context, inputs: Data) -> Data:
    """Asks the (simulated) cloud for a new droplet."""
    ProgressReporter(context).update(10, "Creating droplet...")
    return {"droplet_id": f"d-{inputs['name']}", "region": inputs.get("region", "nyc3")}


@step
async def wait_for_ip(context: Context, create_droplet: Data) -> Data:
    """Polls the droplet until the cloud has given it an address."""
    checks = 0

    def get_droplet() -> Data:
        # The simulated API answers without an IP for the first two checks.
        nonlocal checks
        checks += 1
        return {"id": create_droplet["droplet_id"], "ip": "203.0.113.7" if checks >= 3 else None}

    droplet = await poll(check_fn=get_droplet, interval=200, max_attempts=30,
                         success_condition=lambda d: d["ip"] is not None)
    ProgressReporter(context).update(35, f"Droplet is up at {droplet['ip']}")
    return {"ip": droplet["ip"]}


@step
async def connect_ssh(context: Context, wait_for_ip: Data) -> Data:
    """Connects to the new machine; sshd refuses the first attempts."""
    attempts = 0

    def ssh(host: str, port: int = 22) -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionRefusedError(f"{host}:{port} refused the connection")
        return f"SSH-2.0-OpenSSH_9.6 on {host}"

    banner = await retry(ssh, wait_for_ip["ip"], port=22, max_attempts=5, delay=100, backoff=2.0)
    ProgressReporter(context).update(50, "Connected")
    return {"banner": banner}


@step
async def configure_dns(context: Context, inputs: Data, wait_for_ip: Data) -> Data:
    """Points NAME.example.com at the droplet."""
    return {"record": f"{inputs['name']}.example.com", "points_to": wait_for_ip["ip"]}


@step
async def install_app(context: Context, inputs: Data, connect_ssh: Data) -> Data:
    """Installs the application (takes a while: a durable sleep)."""
    ProgressReporter(context).update(60, "Running migrations...")
    await sleep(inputs.get("install_ms", 500))
    ProgressReporter(context).update(90, "Migrations done")
    return {"app": "shop", "version": inputs.get("version", "1.4.2")}


@step
async def notify(context: Context, configure_dns: Data, install_app: Data) -> Data:
    """Announces the deployment."""
    ProgressReporter(context).update(100, "Deployed")
    return {"message": f"{install_app['app']} {install_app['version']} is live at "
                       f"https://{configure_dns['record']}"}


@workflow
def deploy(wf: WorkflowBuilder) -> None:
    """Creates, connects, configures and announces a server."""
    wf.timeline(create_droplet >> wait_for_ip >> connect_ssh
                >> [configure_dns, install_app] >> notify)


if __name__ == "__main__":
    result = asyncio.run(deploy.execute({"name": "web-1", "install_ms": 300}))
    print(json.dumps({"status": result.status, "output": result.output, "steps": result.steps, "error": result.error},
                     indent=2))
