#!/usr/bin/env cwl-runner
# stdout and stderr captured into separate files.
cwlVersion: v1.2
class: CommandLineTool
requirements:
  DockerRequirement:
    dockerPull: conveyor/busybox:latest
baseCommand: [sh, -c]
arguments:
  - 'echo "to stdout: $0"; echo "to stderr: $0" >&2; echo "second stderr line" >&2'
  - $(inputs.message)
inputs:
  message: string
stdout: out.txt
stderr: err.txt
outputs:
  out:
    type: stdout
  err:
    type: stderr
