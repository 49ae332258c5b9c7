#!/usr/bin/env cwl-runner
# A tool that fails (exit 5, not a success code): cwltool reports permanentFail and exits 1.
cwlVersion: v1.2
class: CommandLineTool
requirements:
  DockerRequirement:
    dockerPull: conveyor/busybox:latest
baseCommand: [sh, -c]
arguments:
  - 'echo "about to fail" >&2; exit 5'
inputs: []
outputs: []
