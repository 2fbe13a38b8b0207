"""orchestrate.redact: secret values in argv, URLs, free text and report trees."""

import pytest

from loaderdoctor.redact import (
    SECRET_WORDS,
    looks_secret,
    redact_argv,
    redact_text,
    redact_tree,
)


@pytest.mark.parametrize("argv, redacted, secrets", [
    (["--api-key", "sk-123456"], ["--api-key", "***"], ["sk-123456"]),
    (["--api-key=sk-123456"], ["--api-key=***"], ["sk-123456"]),
    (["--wandb_token", "wb-abcdef", "--epochs", "3"], ["--wandb_token", "***", "--epochs", "3"], ["wb-abcdef"]),
    (["--wandb-token=wb-abcdef"], ["--wandb-token=***"], ["wb-abcdef"]),
    (["--API_KEY", "Zz9-Zz9"], ["--API_KEY", "***"], ["Zz9-Zz9"]),
    (["-token", "tok12345"], ["-token", "***"], ["tok12345"]),
    (["--apikey", "abcd1234", "--hf-token", "hf_xyz789", "--db_password", "hunter22", "--client-secret", "cs-1",
      "--oauth", "oa-99999", "--authorization", "Bearer-x", "--credentials", "cred-1", "--passwd", "pw-12345"],
     ["--apikey", "***", "--hf-token", "***", "--db_password", "***", "--client-secret", "***",
      "--oauth", "***", "--authorization", "***", "--credentials", "***", "--passwd", "***"],
     ["abcd1234", "hf_xyz789", "hunter22", "cs-1", "oa-99999", "Bearer-x", "cred-1", "pw-12345"]),
])
def test_secret_options(argv, redacted, secrets):
    assert redact_argv(argv) == (redacted, secrets)


def test_flags_without_a_value_and_harmless_names_are_left_alone():
    argv = ["--api-key", "--verbose", "--token", "-p", "secretive", "--tokenizer", "bert-base", "--max-tokens",
            "512", "--num-keypoints", "17", "--passes", "2", "--api-key=", "--", "positional", "--auth"]
    assert redact_argv(argv) == (argv, [])


def test_key_value_arguments():
    argv = ["HF_TOKEN=hf_abcdef", "wandb.api_key=wk-12345", "+db.password=pa55word", "~auth.secret=s3cr3t!",
            "lr=0.1", "model.name=resnet", "OPENAI_API_KEY=sk-xyz12345", "NOT A KEY=value", "x==y"]
    out, secrets = redact_argv(argv)
    assert out == ["HF_TOKEN=***", "wandb.api_key=***", "+db.password=***", "~auth.secret=***",
                   "lr=0.1", "model.name=resnet", "OPENAI_API_KEY=***", "NOT A KEY=value", "x==y"]
    assert secrets == ["hf_abcdef", "wk-12345", "pa55word", "s3cr3t!", "sk-xyz12345"]


def test_url_credentials_only_the_password_goes():
    argv = ["--data", "s3://AKIAUSER:wJalrXUtnFEMI@bucket/train", "postgres://bob:pa:ss@db:5432/x",
            "--mirror=https://user:tok3n42@hub.example.com/models?page=2", "redis://:onlypass@cache",
            "https://example.com/file?api_key=qk-7777&page=2", "https://git@github.com/o/r.git",
            "https://user:@host/", "ftp://anon@host"]
    out, secrets = redact_argv(argv)
    assert out == ["--data", "s3://AKIAUSER:***@bucket/train", "postgres://bob:***@db:5432/x",
                   "--mirror=https://user:***@hub.example.com/models?page=2", "redis://:***@cache",
                   "https://example.com/file?api_key=***&page=2", "https://git@github.com/o/r.git",
                   "https://user:@host/", "ftp://anon@host"]
    assert secrets == ["wJalrXUtnFEMI", "pa:ss", "tok3n42", "onlypass", "qk-7777"]


def test_extra_names_from_redact_option():
    argv = ["--hf-home", "/secret/path", "--hf_home=/other", "--project", "p1", "--wandb-entity", "acme",
            "MY_VAR=v4lue"]
    out, secrets = redact_argv(argv, extra_names=["hf-home", "--wandb-entity", "MY_VAR"])
    assert out == ["--hf-home", "***", "--hf_home=***", "--project", "p1", "--wandb-entity", "***", "MY_VAR=***"]
    assert secrets == ["/secret/path", "/other", "acme", "v4lue"]
    assert looks_secret("--HF_HOME", ["hf-home"]) and not looks_secret("--hf-homes", ["hf-home"])


def test_a_secret_repeated_in_another_argument_goes_too():
    out, secrets = redact_argv(["--api-key", "sk-LONGSECRET", "--header", "X-Key: sk-LONGSECRET", "--n", "sk-1"])
    assert out == ["--api-key", "***", "--header", "X-Key: ***", "--n", "sk-1"]
    assert secrets == ["sk-LONGSECRET"]


def test_every_secret_word_is_recognised():
    for w in SECRET_WORDS:
        assert looks_secret(f"--my-{w}") and looks_secret(f"--{w.upper()}") and looks_secret(f"--x{w}")
    for name in ("--tokenizer", "--keypoints", "--passes", "--lr", "-p", "--", "", "--monkey-patch-free"):
        assert looks_secret(name) == (name == "--monkey-patch-free")  # "monkey" ends with "key": a known cost


def test_redact_text_in_a_traceback():
    _, secrets = redact_argv(["--api-key", "sk-abc123XYZ", "--token", "tok", "--password=sk-abc"])
    tb = ("Traceback (most recent call last):\n"
          '  File "train.py", line 9, in <module>\n'
          "    client = Client(api_key='sk-abc123XYZ')\n"
          "ValueError: invalid key sk-abc123XYZ for https://bob:hunter2@api.example.com/v1?token=zz99&x=1 "
          "(token tok, password sk-abc)\n")
    out = redact_text(tb, secrets)
    assert "sk-abc123XYZ" not in out and "hunter2" not in out and "zz99" not in out
    assert "api_key='***'" in out and "invalid key *** for https://bob:***@api.example.com/v1?token=***&x=1" in out
    assert "(token tok, password ***)" in out  # "tok" is under 4 characters: kept in free text
    assert redact_text(out, secrets) == out


def test_longest_secret_first_and_escaped_variants():
    out = redact_text("a=abcd b=abcdefgh", ["abcd", "abcdefgh"])
    assert out == "a=*** b=***"
    # A secret holding a control character is also found after textsafe.clean escaped it.
    assert redact_text("seen as to\\x1bken1 here", ["to\x1bken1"]) == "seen as *** here"


def test_redact_tree():
    tree = {"target": {"argv": ["--api-key", "***"]},
            "crashes": [{"message": "bad key sk-abc123XYZ", "frames": [("f", "https://u:pw12@h/x", 3)]}],
            "sk-abc123XYZ": 1.5, "n": None}
    out = redact_tree(tree, ["sk-abc123XYZ"])
    assert out == {"target": {"argv": ["--api-key", "***"]},
                   "crashes": [{"message": "bad key ***", "frames": [("f", "https://u:***@h/x", 3)]}],
                   "***": 1.5, "n": None}
    assert tree["crashes"][0]["message"] == "bad key sk-abc123XYZ"  # a new tree
    assert redact_tree(tree, []) ["crashes"][0]["message"] == "bad key sk-abc123XYZ"
