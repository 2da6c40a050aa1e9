"""What `sam build` ships is the release profile written in Cargo.toml. Its builder runs
`cargo lambda build --release`, which fills in its own choice for each of these settings
the profile leaves out, `panic = "abort"` among them."""

import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]
SETTINGS_CARGO_LAMBDA_WOULD_CHOOSE = ("strip", "lto", "codegen-units", "panic")


def test_the_release_profile_makes_every_choice_cargo_lambda_would_otherwise_make():
    profile = tomllib.loads((ROOT / "Cargo.toml").read_text())["profile"]["release"]
    missing = [key for key in SETTINGS_CARGO_LAMBDA_WOULD_CHOOSE if key not in profile]
    assert not missing, f"set {missing} in [profile.release], or cargo lambda chooses them for the deployed build"


def test_a_handler_panic_unwinds_so_lambda_runtime_fails_the_invocation_and_the_sandbox_survives():
    profile = tomllib.loads((ROOT / "Cargo.toml").read_text())["profile"]["release"]
    assert profile["panic"] == "unwind"
