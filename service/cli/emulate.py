"""`aat emulate`: serve worker handlers behind a local RunPod-compatible endpoint API.

Each ``--worker [ID=]NAME`` mounts worker NAME (``echo``, ``upscale``, ``caption``, the animate
stand-ins ``animate-echo`` and ``qwen-edit-echo``, ``animate``) as endpoint ID (default: NAME)
under ``http://127.0.0.1:PORT/v2/ID``; without ``--worker`` the cheap echo worker serves both
``upscale`` and ``caption``. Point the service at it with
``AAT_RUNPOD_BASE_URL=http://127.0.0.1:PORT/v2``, the printed ``RUNPOD_API_KEY`` and the
printed endpoint settings (:func:`service_env`).
"""

from __future__ import annotations

import os
import secrets

import typer


def register(app: typer.Typer) -> None:
    """Add `emulate` to the `aat` app."""
    app.command("emulate")(emulate)


def _parse_workers(values: list[str]) -> dict[str, str]:
    mounts: dict[str, str] = {}
    for value in values or ["upscale=echo", "caption=echo"]:
        endpoint_id, _, name = value.rpartition("=")
        mounts[endpoint_id or name] = name
    return mounts


def service_env(mounts: dict[str, str]) -> list[tuple[str, str]]:
    """The settings that point the service at the mounted endpoints (endpoint ID -> worker
    NAME): upscale and caption (echo serves both), our animate worker, and the stand-in of
    RunPod's public edit endpoint."""
    env: list[tuple[str, str]] = []
    for kind, names in (("upscale", ("upscale", "echo")), ("caption", ("caption", "echo")),
                        ("animate", ("animate", "animate-echo"))):
        fits = [e for e, name in mounts.items() if name in names]
        if fits:
            env.append((f"RUNPOD_{kind.upper()}_ENDPOINT_ID", kind if kind in fits else fits[0]))
    public = [e for e, name in mounts.items() if name == "qwen-edit-echo"]
    if public:
        env.append(("AAT_RUNPOD_EDIT_PUBLIC_SLUG", public[0]))
    return env


def emulate(
    worker: list[str] = typer.Option(
        [], "--worker", "-w", help="[ID=]NAME: serve worker NAME (echo, upscale, caption, animate-echo, "
        "qwen-edit-echo, animate) as endpoint ID; repeat for several. Default: upscale=echo and "
        "caption=echo."),
    port: int = typer.Option(8600, "--port", "-p", min=1, max=65535, help="Port on 127.0.0.1."),
    workers: int = typer.Option(2, "--workers", "-n", min=1, max=256,
                                help="Concurrent workers per endpoint."),
    latency: float = typer.Option(0.0, "--latency", min=0.0,
                                  help="Seconds of simulated GPU time per tile (per job without tiles)."),
    faults: str = typer.Option("", "--faults", help="Fault rates, e.g. "
                               "'429=0.1,5xx=0.05,failed=0.1,no_output=0.05,slow=0.1,expire=0.02,"
                               "timeout=0.02' (kind=rate[:max count])."),
    seed: int = typer.Option(0, "--seed", help="Seed of the fault generator."),
    retention: float = typer.Option(1800.0, "--retention", min=0.0,
                                    help="Seconds a finished /run result stays readable."),
    no_tint: bool = typer.Option(False, "--no-tint", help="echo: return tiles unchanged."),
    api_key: str | None = typer.Option(None, "--api-key", help="Bearer token to accept "
                                       "(default: $RUNPOD_API_KEY, else a random one)."),
    rate_limits: bool = typer.Option(False, "--rate-limits", help="Enforce RunPod's published "
                                     "per-endpoint request budgets (429 beyond them)."),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request."),
) -> None:
    """Run a local RunPod serverless emulator until Ctrl-C."""
    from workers.emulator import EmulatorServer, EndpointConfig, Faults, resolve_handler
    from workers.emulator.faults import RUNPOD_RATE_LIMITS

    key = api_key or os.environ.get("RUNPOD_API_KEY") or secrets.token_urlsafe(24)
    try:
        mounts = _parse_workers(worker)
        configs = {
            endpoint_id: EndpointConfig(
                handler=resolve_handler(name, **({"tint_tiles": False} if no_tint and
                                                 name == "echo" else {})),
                workers=workers, latency_s=latency, retention_s=retention,
                faults=Faults.parse(faults, seed=seed),
                rate_limits=RUNPOD_RATE_LIMITS if rate_limits else None,
            )
            for endpoint_id, name in mounts.items()
        }
    except (ValueError, ImportError) as exc:
        from service.core.errors import ParamsError

        raise ParamsError(str(exc)) from exc
    base = f"http://127.0.0.1:{port}/v2"
    typer.echo(f"RunPod emulator: {', '.join(f'{e} ({n})' for e, n in mounts.items())}")
    typer.echo(f"  export AAT_RUNPOD_BASE_URL={base}")
    typer.echo(f"  export AAT_RUNPOD_REST_URL={base}   # provisioning: aat deploy runpod")
    if not (api_key or os.environ.get("RUNPOD_API_KEY")):
        typer.echo(f"  export RUNPOD_API_KEY={key}")
    for name, value in service_env(mounts):
        typer.echo(f"  export {name}={value}")
    EmulatorServer(configs, api_key=key, port=port).serve_forever(access_log=access_log)
