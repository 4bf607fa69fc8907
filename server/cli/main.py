"""The ``spatialjam`` command: ``serve``, ``token``, ``render``, ``ai …``, and the commands that
other packages add through the ``spatialjam.commands`` entry points (:data:`PLUGIN_GROUP`):
``bench …``, from ``bench/cli.py``.

Every failure a user can cause (a missing file, a bad SOFA set, an argument out of range) ends
in one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from importlib.metadata import EntryPoint, entry_points

from server.cli.args import (
    MAX_WORKERS,
    add_device_arg,
    add_frame_arg,
    add_hrtf_args,
    cidr,
    count,
    env_list,
    finite,
)
from server.cli.ice_args import add_ice_args, ice_config
from server.cli.token import add_token_parser
from server.errors import CliError
from server.tick.priority import MODES
from server.web.admission import MAX_CONNECTIONS, MAX_CONNECTIONS_PER_IP
from signaling.limits import HRTF_UPLOADS_BUDGET_BYTES, MAX_HRTF_SET_BYTES, ROOM_PRESETS

EXIT_USAGE = 2
EXIT_FAILED = 1
#: The entry-point group of the commands other packages add. Each entry point names a function
#: ``register(subparsers)`` that adds its commands to ``spatialjam``'s subcommands; a command it
#: adds sets ``run``, a function of the parsed arguments returning the exit status, as its
#: parser's default.
PLUGIN_GROUP = "spatialjam.commands"
#: Said after a usage error when no entry point of :data:`PLUGIN_GROUP` is installed: the
#: project was installed before pyproject.toml declared them, or not at all.
NO_PLUGINS = (f"spatialjam: this install has no commands of the {PLUGIN_GROUP} entry points "
              "(bench …): install the project again (make test, make serve or pip install -e .)")


def _dims(text: str) -> tuple[float, float, float]:
    """``X,Y,Z`` metres (the range is the room model's to check)."""
    parts = text.split(",")
    try:
        values = tuple(float(v) for v in parts)
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"{text!r} is not three numbers X,Y,Z in metres")
    return values  # type: ignore[return-value]


def plugin_commands() -> list[EntryPoint]:
    """The installed entry points of :data:`PLUGIN_GROUP`, by name."""
    return sorted(entry_points(group=PLUGIN_GROUP), key=lambda ep: ep.name)


def add_plugin_commands(sub: argparse._SubParsersAction) -> None:
    """Let each entry point of :data:`PLUGIN_GROUP` add its commands to ``sub``."""
    for ep in plugin_commands():
        ep.load()(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spatialjam", description="Real-time collaborative audio with binaural 3D mixes.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the jam server")
    serve.add_argument("--host", default=os.environ.get("SPATIALJAM_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=count("port", 0, 65535),
                       default=os.environ.get("SPATIALJAM_PORT", "8080"))
    add_device_arg(serve)
    serve.add_argument("--hrtf", default="kemar", metavar="NAME_OR_FILE",
                       help="default HRTF set: kemar, spherical-head[:RADIUS_M] or a SOFA file")
    serve.add_argument("--acoustics", choices=("off", *ROOM_PRESETS), default="off",
                       help="new rooms' acoustics (early reflections and reverb), until their "
                       "admin chooses: off (default), " + ", ".join(ROOM_PRESETS))
    serve.add_argument("--room-capacity", type=count("room capacity", 1, 256), default=16,
                       metavar="N", help="the most participants in one room (default 16); the "
                       "renderer of every room is sized to it")
    serve.add_argument("--clock-phase", choices=("follow", "fixed"), default="follow",
                       help="follow: each room's tick moves to just after its players' frames "
                       "arrive (default); fixed: it stays where it started (for comparisons)")
    add_frame_arg(serve, "every room's frame: its clock ticks, and its audio packets last, "
                  "this long (ms): 20 (default, or SPATIALJAM_FRAME_MS), or 10, 5, 2.5 for "
                  "low-latency rooms")
    serve.add_argument("--clock-priority", choices=MODES,
                       default=os.environ.get("SPATIALJAM_CLOCK_PRIORITY", "auto"),
                       help="auto: each room's clock runs at real-time priority where the "
                       "system allows it, for as many rooms as leave a core to the network "
                       "(default, or SPATIALJAM_CLOCK_PRIORITY); normal: as an ordinary thread")
    serve.add_argument("--state", metavar="PATH",
                       help="the SQLite file that keeps rooms' seats, stage and personal mixes "
                       "across restarts (default $SPATIALJAM_STATE_DIR/rooms.sqlite3 or "
                       "~/.local/state/spatialjam/rooms.sqlite3); 'none' keeps nothing")
    serve.add_argument("--redis", metavar="URL",
                       help="join a deployment of several nodes sharing this Redis server "
                       "(redis://HOST:PORT/DB): rooms live on one node each, joins reach them "
                       "from any node, a dead node's rooms open again elsewhere; rooms are "
                       "saved in Redis (docs/DEPLOYMENT.md). Default: a single node")
    serve.add_argument("--public-url", metavar="URL",
                       help="with --redis: where clients and other nodes reach this node's "
                       "signaling, ws://HOST:PORT/ws (default: the --host and --port it "
                       "listens on)")
    serve.add_argument("--recordings", metavar="DIR",
                       help="where session recordings go (default: recordings/ beside the "
                       "--state file, or $SPATIALJAM_STATE_DIR/recordings); 'none' turns "
                       "recording off")
    serve.add_argument("--empty-room-grace", type=finite("empty room grace", 0, 3600),
                       default=30.0, metavar="SECONDS",
                       help="how long an empty room keeps its seats for members who come back "
                       "before it closes (default 30)")
    serve.add_argument("--secret-file", metavar="FILE",
                       help="the secret that signs access tokens (or SPATIALJAM_SECRET_FILE / "
                       "SPATIALJAM_SECRET): rooms then need tokens. Without one the server "
                       "listens on loopback only, with open rooms")
    serve.add_argument("--tls-cert", metavar="FILE", default=os.environ.get("SPATIALJAM_TLS_CERT"),
                       help="serve the page, /ws (as WSS) and every download over HTTPS with "
                       "this PEM certificate chain (or SPATIALJAM_TLS_CERT); browsers open the "
                       "microphone only on HTTPS pages or on this machine. SIGHUP reloads it")
    serve.add_argument("--tls-key", metavar="FILE", default=os.environ.get("SPATIALJAM_TLS_KEY"),
                       help="the certificate's PEM private key (or SPATIALJAM_TLS_KEY)")
    serve.add_argument("--trusted-proxy", type=cidr("trusted proxy"), action="append",
                       metavar="CIDR", default=env_list("SPATIALJAM_TRUSTED_PROXY"),
                       help="a reverse proxy's address or network (repeatable, or "
                       "SPATIALJAM_TRUSTED_PROXY=CIDR,CIDR): connections from it count against "
                       "the client its X-Forwarded-For names (docs/DEPLOYMENT.md)")
    serve.add_argument("--max-connections-per-ip", type=count("max connections per ip", 1,
                                                              1_000_000),
                       default=MAX_CONNECTIONS_PER_IP, metavar="N",
                       help="signaling connections one client (an IPv4 address, an IPv6 /64) "
                       "may hold at once; past it the handshake is refused with HTTP 429 "
                       f"(default {MAX_CONNECTIONS_PER_IP})")
    serve.add_argument("--max-connections", type=count("max connections", 1, 1_000_000),
                       default=MAX_CONNECTIONS, metavar="N",
                       help="signaling connections the server holds at once; past it the "
                       f"handshake is refused with HTTP 503 (default {MAX_CONNECTIONS})")
    serve.add_argument("--upload-set-mb", type=count("upload set MB", 1, 2**20),
                       default=MAX_HRTF_SET_BYTES >> 20, metavar="MB",
                       help="most memory one uploaded HRTF set may take once prepared for "
                       "rendering; larger sets are refused in words (default "
                       f"{MAX_HRTF_SET_BYTES >> 20})")
    serve.add_argument("--upload-budget-mb", type=count("upload budget MB", 1, 2**20),
                       default=HRTF_UPLOADS_BUDGET_BYTES >> 20, metavar="MB",
                       help="most memory all uploaded HRTF sets kept may take together; the "
                       "least recently used set no listener uses is forgotten first (default "
                       f"{HRTF_UPLOADS_BUDGET_BYTES >> 20})")
    serve.add_argument("--workers", type=count("workers", 1, MAX_WORKERS),
                       default=min(os.cpu_count() or 1, MAX_WORKERS), metavar="N",
                       help="processes: each room lives on one, new rooms go to the least "
                       "loaded; 1 runs a single process (default: the number of cores, "
                       f"{os.cpu_count()} here; docs/DEPLOYMENT.md)")
    add_ice_args(serve)
    serve.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set by the front
    serve.add_argument("--front-pid", type=int, help=argparse.SUPPRESS)
    add_token_parser(sub)

    render = sub.add_parser(
        "render", help="render a mono WAV file binaurally to a stereo WAV file",
        description="Azimuth 0° is straight ahead, +90° the listener's left; elevation +90° "
                    "is above (SOFA's convention).")
    render.add_argument("--in", dest="input", required=True, metavar="IN.wav")
    render.add_argument("--out", dest="output", required=True, metavar="OUT.wav")
    add_hrtf_args(render)
    render.add_argument("--azimuth", type=finite("azimuth", -360, 360), default=0.0,
                        metavar="DEG")
    render.add_argument("--elevation", type=finite("elevation", -90, 90), default=0.0,
                        metavar="DEG")
    render.add_argument("--distance", type=finite("distance", 0, 10_000), default=1.0,
                        metavar="M")
    render.add_argument("--orbit", type=finite("orbit period", 0.05, 86_400), metavar="SECONDS",
                        help="circle the listener once every SECONDS (towards the left)")
    render.add_argument("--distance-model", choices=("inverse", "linear", "exponential"),
                        default="inverse")
    render.add_argument("--ref-distance", type=finite("reference distance", 0.01, 1000),
                        default=1.0, metavar="M")
    render.add_argument("--rolloff", type=finite("rolloff", 0, 100), default=1.0)
    render.add_argument("--float", action="store_true", help="write 32-bit float samples")
    render.add_argument("--room", metavar="PRESET",
                        help="room acoustics: dry-studio, rehearsal-room, club, concert-hall")
    render.add_argument("--room-dims", type=_dims, metavar="X,Y,Z",
                        help="shoebox room of X×Y×Z metres (with --rt60, or a --room's surfaces)")
    render.add_argument("--rt60", type=finite("RT60", 0.1, 4.0), metavar="SECONDS",
                        help="reverberation time (with --room-dims, or scaling a --room)")
    render.add_argument("--room-order", type=int, choices=(0, 1, 2), metavar="N",
                        help="image-source order of the early reflections: 0, 1 (default), 2")
    render.add_argument("--wet", type=finite("wet", 0.0, 1.0), metavar="0..1",
                        help="room level: 0 dry, 0.5 (default) as the room is, 1 room only")
    render.add_argument("--reference", action="store_true",
                        help="crossfeed-free reference: plain stereo panning instead of the HRTF")
    add_device_arg(render)

    add_plugin_commands(sub)

    ai = sub.add_parser("ai", help="the AI accompanist's models")
    ai_sub = ai.add_subparsers(dest="ai", required=True, metavar="AI_COMMAND")
    from ai_accompany.brain import MODEL_KINDS, ROLES
    from ai_accompany.models import MODEL_NAMES
    from ai_accompany.tunes import SETS

    ai_eval = ai_sub.add_parser(
        "eval", help="score the shipped models and the n-gram baseline on held-out music",
        description="Offline (the default), per model: teacher-forced accuracy and NLL per "
                    "step, in-key rate and parallel fifths/octaves per 100 steps of generated "
                    "music (beside Bach's own), step latency p50/p99 in onnxruntime. With "
                    "--online: held-out tunes of four styles played through the live listening "
                    "path into the AI, which knows only what it has heard; scored on what "
                    "sounds against the melody at that moment (harmony beside a chance "
                    "control, how far it trails, in key, rests filled, notes per second).")
    ai_eval.add_argument("--models", nargs="+", choices=MODEL_NAMES, metavar="MODEL",
                         help=f"any of {', '.join(MODEL_NAMES)} (default: all)")
    ai_eval.add_argument("--json", action="store_true", help="print the results as JSON")
    ai_eval.add_argument("--online", action="store_true",
                         help="score the AI as players hear it (see above)")
    ai_eval.add_argument("--sets", nargs="+", choices=SETS, metavar="SET",
                         help=f"with --online: any of {', '.join(SETS)} (default: all)")
    ai_eval.add_argument("--brains", dest="models_online", nargs="+", choices=MODEL_KINDS,
                         metavar="BRAIN", help="with --online: any of "
                         f"{', '.join(MODEL_KINDS)} (networks, n-gram, rule; default: all)")
    ai_eval.add_argument("--tunes", type=count("tunes", 1, 1000), metavar="N",
                         help="with --online: the first N tunes of each set (default: all)")
    ai_eval.add_argument("--role", choices=ROLES, default="accompany",
                         help="with --online: the AI's role (default accompany)")
    ai_eval.add_argument("--lead-ms", type=finite("lead-ms", 5, 1000), metavar="MS",
                         help="with --online: decide each note this long before it sounds "
                              "(default: the sidecar's, 40)")
    ai_demo = ai_sub.add_parser(
        "demo", help="render a melody accompanied by the AI through the whole path to a WAV file",
        description="A tune on the electric piano goes through listening, the models (each "
                    "note decided just before it sounds), the synthesiser and the binaural "
                    "engine: the melody 30° left, the AI 30° right.")
    ai_demo.add_argument("--out", required=True, metavar="WAV", help="the stereo file to write")
    ai_demo.add_argument("--role", choices=("accompany", "improvise", "call_response"),
                         default="accompany")
    ai_demo.add_argument("--instrument", choices=("epiano", "organ", "bass"), default="organ")
    ai_demo.add_argument("--bpm", type=finite("bpm", 40, 240), default=100.0)
    ai_demo.add_argument("--seconds", type=finite("seconds", 4, 120), default=24.0)
    ai_demo.add_argument("--follow", action="store_true",
                         help="let the AI find the tempo by listening (default: it is told)")
    add_hrtf_args(ai_demo)
    from ai_accompany.texture import STYLE_NAMES

    accompany = ai_sub.add_parser(
        "accompany", help="practise offline: your recording with the AI playing along, "
                          "rendered binaurally to a WAV file",
        description="Your recording goes through the path a room takes (listening, the models, "
                    "each note decided just before it sounds, from what was played so far), "
                    "the AI's notes through the synthesiser; you sound 30° left, the AI 30° "
                    "right, through the binaural engine.")
    accompany.add_argument("--in", dest="input", required=True, metavar="MELODY.wav",
                           help="your recording (WAV, FLAC or Ogg; any rate; up to 10 minutes)")
    accompany.add_argument("--out", required=True, metavar="WITH_AI.wav",
                           help="the stereo file to write")
    accompany.add_argument("--role", choices=ROLES, default="accompany")
    accompany.add_argument("--style", choices=STYLE_NAMES, default="chorale",
                           help="the accompaniment's texture (default chorale)")
    accompany.add_argument("--instrument", choices=("epiano", "organ", "bass"),
                           default="epiano")
    accompany.add_argument("--bpm", type=tempo_or_follow, default=0.0,
                           help="your tempo (40-240), or 0 to let the AI find it (default)")
    accompany.add_argument("--ai-gain", type=finite("ai-gain", 0, 4), default=1.0,
                           metavar="GAIN", help="the AI's level against yours (default 1)")
    add_hrtf_args(accompany)
    return parser


def tempo_or_follow(text: str) -> float:
    """A fixed tempo (40-240 BPM), or 0: find the players' tempo by listening."""
    value = finite("bpm", 0, 240)(text)
    if 0 < value < 40:
        raise argparse.ArgumentTypeError(f"bpm must be 0 (follow) or 40 to 240, got {text}")
    return value


#: Commands run by a function of their own module, imported only when the command runs.
COMMANDS = {
    ("token", None): "server.cli.token:run_token",
    ("render", None): "server.cli.render:run_render",
    ("ai", "demo"): "server.cli.ai_demo:run_ai_demo",
    ("ai", "accompany"): "server.cli.ai_accompany:run_ai_accompany",
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code == EXIT_USAGE and not plugin_commands():
            print(NO_PLUGINS, file=sys.stderr)
        raise
    if args.command == "serve" and args.trusted_proxy:  # from the environment: unchecked yet
        try:
            args.trusted_proxy = [cidr("trusted proxy")(v) for v in args.trusted_proxy]
        except argparse.ArgumentTypeError as exc:
            parser.error(f"argument --trusted-proxy: {exc}")
    quiet = logging.INFO if args.command == "serve" else logging.WARNING
    logging.basicConfig(level=logging.DEBUG if args.verbose else quiet,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "serve":
            ice = ice_config(args)  # checked at once, also by a front for its workers
            if args.workers > 1 or args.redis:
                from server.routing.front import run_front

                return run_front(args, ice)
            from server.web.admission import TrustedProxies
            from server.web.app import run_server
            from server.web.tls import TlsError, tls_files

            try:
                tls = tls_files(args)
            except TlsError as exc:
                raise CliError(str(exc)) from None

            announce = None
            if args.worker is not None:
                from server.routing.workers import STATE_URL_ENV, as_worker

                args.state = args.state or os.environ.get(STATE_URL_ENV)

                announce = as_worker(args.front_pid, args.verbose)
            return run_server(args.host, args.port, device=args.device, hrtf=args.hrtf,
                              capacity=args.room_capacity,
                              follow_phase=args.clock_phase == "follow",
                              frame_ms=args.frame_ms,
                              clock_priority=args.clock_priority,
                              secret_file=args.secret_file,
                              empty_room_grace_s=args.empty_room_grace,
                              state_path=args.state,
                              max_connections_per_ip=args.max_connections_per_ip,
                              max_connections=args.max_connections,
                              acoustics=args.acoustics, announce=announce,
                              recordings_dir=args.recordings, tls=tls,
                              trusted_proxies=TrustedProxies(args.trusted_proxy or ()),
                              ice=ice, upload_set_mb=args.upload_set_mb,
                              upload_budget_mb=args.upload_budget_mb)
        if getattr(args, "run", None) is not None:  # a command of PLUGIN_GROUP
            return args.run(args)
        runner = COMMANDS.get((args.command, getattr(args, "ai", None)))
        if runner is not None:
            module, function = runner.split(":")
            return getattr(importlib.import_module(module), function)(args)
        if args.command == "ai" and args.ai == "eval":
            from ai_accompany.evaluate import run_eval
            from ai_accompany.online import run_online

            try:
                return run_online(args) if args.online else run_eval(args)
            except (OSError, ValueError) as exc:
                raise CliError(str(exc)) from exc
    except (CliError, _hrtf_error()) as exc:
        print(f"spatialjam {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except MemoryError:
        print(f"spatialjam {args.command}: not enough memory for this request", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    parser.error("unknown command")
    return EXIT_USAGE


def _hrtf_error() -> type[Exception]:
    """The HRTF package's error, imported only once an error is being handled: importing the
    package loads the engine, which the front of ``serve --workers N`` does without."""
    from hrtf.errors import HrtfError

    return HrtfError

