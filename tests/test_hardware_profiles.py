"""Hardware profiles: built-ins load with the right numbers; bad files fail naming file + field."""

from __future__ import annotations

from pathlib import Path

import pytest

from dualsim.errors import ProfileError
from dualsim.cluster.profile import list_profiles, load_profile

H800 = Path(__file__).resolve().parents[1] / "hardware_profiles" / "h800.toml"


def test_builtin_profiles_listed() -> None:
    names = [n for n, _ in list_profiles()]
    assert {"h800", "h100", "h20", "a100"} <= set(names)
    assert all(desc for _, desc in list_profiles())


def test_h800_numbers() -> None:
    p = load_profile("h800")
    assert p.sms == 132 and p.comm_sms == 20
    assert p.hbm_bytes == 80e9
    assert p.bf16_flops == 989e12 and p.fp8_flops == 1979e12
    assert p.ib_bandwidth == 50e9 and p.nvlink_bandwidth == 160e9
    assert p.gpus_per_node == 8
    # the comm law's numbers in SI units (ms, us and GB/s in the file)
    assert p.a2a_per_sm == 7.19e9 and p.nccl_per_sm == 25e9
    assert p.dispatch_latency == pytest.approx(0.208e-3)
    assert p.combine_latency == pytest.approx(0.521e-3)
    assert p.a2a_peer_latency == pytest.approx(0.9e-6)
    assert p.nccl_latency == pytest.approx(20e-6)
    assert (p.pp_sms, p.dp_sms) == (2, 8)
    # a2a_overlap_rate and interference come from `dualsim calibrate` (tests/test_costs.py)


@pytest.mark.parametrize("name, sms, hbm_gb, bf16, fp8", [  # vendors' dense peaks
    ("h100", 132, 80, 989, 1979),
    ("h20", 78, 96, 148, 296),
    ("a100", 108, 80, 312, None),
])
def test_other_profiles_numbers(name: str, sms: int, hbm_gb: int, bf16: int,
                                fp8: int | None) -> None:
    p = load_profile(name)
    assert (p.sms, p.hbm_bytes, p.bf16_flops) == (sms, hbm_gb * 1e9, bf16 * 1e12)
    assert p.fp8_flops == (None if fp8 is None else fp8 * 1e12)


def test_a100_has_no_fp8_and_falls_back() -> None:
    p = load_profile("a100")
    assert p.fp8_flops is None
    assert p.peak_flops("fp8") == p.peak_flops("bf16") == 312e12


def test_symlinked_folder_and_user_path(tmp_path: Path) -> None:
    assert H800.exists()  # hardware_profiles -> dualsim/data/profiles
    own = tmp_path / "mine.toml"
    own.write_text(H800.read_text().replace('name = "h800"', 'name = "mine"'))
    assert load_profile(str(own)).name == "mine"


def _broken(tmp_path: Path, old: str, new: str) -> str:
    text = H800.read_text()
    assert old in text
    f = tmp_path / "bad.toml"
    f.write_text(text.replace(old, new, 1))
    return str(f)


@pytest.mark.parametrize("old,new,field", [
    ("ib_bandwidth = { value = 50,", "ib_bandwidth = { value = 0,", "node.ib_bandwidth"),
    ("nvlink_bandwidth = { value = 160,", "nvlink_bandwidth = { value = -3,",
     "node.nvlink_bandwidth"),
    ("hbm = { value = 80,", "hbm_size = { value = 80,", "gpu.hbm_size"),
    ('sms = { value = 132, unit = "SM"', 'sms = { value = 132, unit = "cores"', "gpu.sms"),
    ("[efficiency]\n", "[efficiency]\nturbo = { value = 1, unit = \"x\", source = \"s\" }\n",
     "efficiency.turbo"),
    ("interference = { value = 0.0434,", "interference = { value = 1.0,", "comm.interference"),
    ('pp_sms = { value = 2,', 'pp_sms = { value = 132,', "comm.pp_sms"),
    ('a2a_per_sm = { value = 7.19, unit = "GB/s/SM"', 'a2a_per_sm = { value = 7.19, unit = "GB/s"',
     "comm.a2a_per_sm"),
])
def test_bad_field_names_file_and_field(tmp_path: Path, old: str, new: str, field: str) -> None:
    path = _broken(tmp_path, old, new)
    with pytest.raises(ProfileError) as e:
        load_profile(path)
    assert path in str(e.value) and field in str(e.value)


def test_missing_field(tmp_path: Path) -> None:
    text = "\n".join(l for l in H800.read_text().splitlines() if not l.startswith("ib_bandwidth"))
    f = tmp_path / "noib.toml"
    f.write_text(text)
    with pytest.raises(ProfileError, match=r"noib.toml: missing field node.ib_bandwidth"):
        load_profile(str(f))


def test_unknown_name_and_missing_file() -> None:
    with pytest.raises(ProfileError, match="unknown hardware profile 'h900'.*h800"):
        load_profile("h900")
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile("/nonexistent/x.toml")


def test_overrides_validate() -> None:
    p = load_profile("h800").with_overrides(comm_sms=32, ib_gbps=100)
    assert p.comm_sms == 32 and p.ib_bandwidth == 100e9
    with pytest.raises(ProfileError, match="--ib-gbps"):
        load_profile("h800").with_overrides(ib_gbps=0)
    with pytest.raises(ProfileError, match="--comm-sms"):
        load_profile("h800").with_overrides(comm_sms=132)


def test_profiles_command_lists_profiles_and_models(capsys: pytest.CaptureFixture[str]) -> None:
    from dualsim.cli.profiles import profiles_command

    profiles_command()
    out = capsys.readouterr().out
    for name in ("h800", "h100", "h20", "a100", "deepseek-v3", "small-moe", "llama-70b"):
        assert name in out
    assert "1979" in out and "PP16 EP64 2048 GPUs, M=120" in out


@pytest.mark.parametrize("kind", ["profile", "model"])
def test_binary_file_is_a_one_line_error(tmp_path: Path, kind: str) -> None:
    from typer.testing import CliRunner

    from dualsim.cli import app

    junk = tmp_path / "junk.toml"
    junk.write_bytes(b"\x7fELF\x02\x01\x01\x00\xd0\xff\xfe")
    args = {"profile": ["--profile", str(junk), "--model", "small-moe"],
            "model": ["--profile", "h800", "--model", str(junk)]}[kind]
    res = CliRunner().invoke(app, ["simulate", "dualpipe", *args, "--json"])
    assert res.exit_code == 1, res.output
    assert res.stdout == ""
    assert "Traceback" not in res.stderr
    assert res.stderr.splitlines()[0].startswith("error: ")
    assert "junk.toml" in res.stderr and "not a text (UTF-8) TOML file" in res.stderr
    with pytest.raises(ProfileError, match="not a text"):
        load_profile(str(junk))


def test_profiles_command_json_is_one_document_on_stdout() -> None:
    import json

    from typer.testing import CliRunner

    from dualsim.cli import app

    res = CliRunner().invoke(app, ["profiles", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    h800 = {p["name"]: p for p in d["profiles"]}["h800"]
    assert (h800["sms"], h800["hbm_gb"], h800["bf16_tflops"], h800["fp8_tflops"]) == (
        132, 80, 989, 1979)
    assert (h800["nvlink_gbps"], h800["ib_gbps"], h800["comm_sms"]) == (160, 50, 20)
    assert {p["name"]: p for p in d["profiles"]}["a100"]["fp8_tflops"] is None
    ds = {m["name"]: m for m in d["models"]}["deepseek-v3"]
    assert ds["layers"] == 61 and ds["moe"] is True
    assert ds["default_layout"]["ranks"] == 16 and ds["default_layout"]["microbatches"] == 120


# ---- every field is bounded (the bound is in the message), whatever the schema holds ---------

def _with_value(section: str, key: str, value: str) -> str:
    """h800.toml with ``section.key``'s value replaced by the TOML text ``value``."""
    import re

    out, current, done = [], None, False
    for line in H800.read_text().splitlines():
        head = re.match(r"^\[(\w+)\]", line)
        if head:
            current = head.group(1)
        elif current == section and re.match(rf"^{key}\s*=", line):
            line, n = re.subn(r"value\s*=\s*[^,]+,", f"value = {value},", line, count=1)
            done = n == 1
        out.append(line)
    assert done, (section, key)
    return "\n".join(out) + "\n"


def _fields_in_h800() -> list[tuple[str, str]]:
    import tomllib

    from dualsim.cluster.profile import PROFILE_SCHEMA

    raw = tomllib.loads(H800.read_text())
    return [(s, k) for s, keys in PROFILE_SCHEMA.items() for k in keys if k in raw.get(s, {})]


@pytest.mark.parametrize("section, key", _fields_in_h800())
@pytest.mark.parametrize("value", ["5e-324", "4611686018427387904", "1e308", "nan", "inf"])
def test_every_profile_field_is_bounded(tmp_path: Path, section: str, key: str,
                                        value: str) -> None:
    from dualsim.cluster.profile import PROFILE_SCHEMA, field_range

    unit, rule = PROFILE_SCHEMA[section][key][:2]
    f = tmp_path / "p.toml"
    f.write_text(_with_value(section, key, value))
    lo, hi = field_range(section, key)
    assert 0 <= lo <= hi < 1e15 and (lo > 0 or rule in ("nonneg", "share"))
    if rule == "int" and value in ("5e-324", "1e308"):
        expected = f"must be a positive integer, got {float(value)!r}"
    elif value in ("nan", "inf"):
        expected = f"value must be a number, got {float(value)!r}"
    elif value == "5e-324" and rule in ("nonneg", "share"):
        return  # a tiny non-negative latency or share is legal (it is 0 in practice)
    else:
        shown = float(value) if "e" in value else int(value)
        expected = f"must be between {lo:g} and {hi:g}"
        expected += "" if unit == "fraction" else f" {unit}"
        expected += f", got {shown!r}"
    with pytest.raises(ProfileError) as e:
        load_profile(str(f))
    assert e.value.message.startswith(f"{f}: field {section}.{key} ")
    assert e.value.message.endswith(expected), e.value.message


def test_every_profile_unit_has_a_range() -> None:
    from dualsim.cluster.profile import PROFILE_SCHEMA, UNIT_RANGES

    units = {spec[0] for keys in PROFILE_SCHEMA.values() for spec in keys.values()}
    assert units <= set(UNIT_RANGES), units - set(UNIT_RANGES)


def test_the_builtin_profiles_lie_inside_their_ranges() -> None:
    # the ranges must never refuse a real GPU: every built-in loads (and so passes them)
    for name, _ in list_profiles():
        load_profile(name)


def test_a2a_per_sm_of_2_to_the_62_is_refused_not_a_division_by_zero(tmp_path: Path) -> None:
    # (was comm.a2a_sm_scale, a ZeroDivisionError in sim/links.py; the per-SM law replaced it)
    f = tmp_path / "p.toml"
    f.write_text(_with_value("comm", "a2a_per_sm", "4611686018427387904"))
    with pytest.raises(ProfileError, match=r"must be between 1e-06 and 10000 GB/s/SM, got "
                                           r"4611686018427387904$"):
        load_profile(str(f))


@pytest.mark.parametrize("flag, kw", [("--ib-gbps", "ib_gbps"), ("--nvlink-gbps", "nvlink_gbps")])
def test_bandwidth_overrides_are_bounded_like_the_file(flag: str, kw: str) -> None:
    with pytest.raises(ProfileError, match=rf"^{flag} must be between 0.001 and 1e\+06 GB/s, "
                                           r"got 5e-324$"):
        load_profile("h800").with_overrides(**{kw: 5e-324})


@pytest.mark.parametrize("text, expected", [
    ("x = " + "[" * 100_000 + "]" * 100_000,
     "nests arrays or tables too deeply to be a hardware profile; check the file"),
    ("x = " + "9" * 5000, "holds an integer too long to read (over 4300 digits); check the file"),
])
def test_toml_that_tomllib_cannot_take(tmp_path: Path, text: str, expected: str) -> None:
    f = tmp_path / "p.toml"
    f.write_text(text + "\n")
    with pytest.raises(ProfileError) as e:
        load_profile(str(f))
    assert e.value.message == f"hardware profile file {str(f)!r} {expected}"


@pytest.mark.parametrize("field, value", [("name", '"a\\nb"'), ("name", '""'), ("name", "3"),
                                          ("description", '"' + "x" * 301 + '"')])
def test_name_and_description_are_one_short_line(tmp_path: Path, field: str, value: str) -> None:
    import re

    f = tmp_path / "p.toml"
    f.write_text(re.sub(rf"^{field} = .*$", lambda _: f"{field} = {value}", H800.read_text(),
                        count=1, flags=re.M))
    with pytest.raises(ProfileError, match=rf"field {field} must be a one-line printable string"):
        load_profile(str(f))
