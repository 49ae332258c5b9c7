#!/usr/bin/env cwl-runner
# EnvVarRequirement: variables (one from an input) reach the job; HOME is the work dir and
# TMPDIR is writable, as the CWL spec asks of every runner.
cwlVersion: v1.2
class: CommandLineTool
requirements:
  DockerRequirement:
    dockerPull: conveyor/busybox:latest
  EnvVarRequirement:
    envDef:
      GREETING: hello world
      WHO: $(inputs.who)
      WITH_SPACES: "  a  b  "
baseCommand: [sh, -c]
arguments:
  - >-
    echo "GREETING=$GREETING";
    echo "WHO=$WHO";
    echo "WITH_SPACES=[$WITH_SPACES]";
    [ "$HOME" = "$PWD" ] && echo "HOME is the work dir";
    echo scratch > "$TMPDIR/scratch" && echo "TMPDIR=$TMPDIR is writable"
inputs:
  who: string
stdout: env.txt
outputs:
  out:
    type: stdout
