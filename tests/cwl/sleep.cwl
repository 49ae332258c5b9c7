#!/usr/bin/env cwl-runner
# A step that runs for a while, for the kill tests: says it started, then sleeps.
cwlVersion: v1.2
class: CommandLineTool
requirements:
  DockerRequirement:
    dockerPull: conveyor/busybox:latest
baseCommand: [sh, -c]
arguments:
  - 'echo "sleeping $0 s" >&2; sleep "$0"; echo done > done.txt'
  - $(inputs.seconds)
inputs:
  seconds:
    type: int
    default: 30
outputs:
  done:
    type: File
    outputBinding:
      glob: done.txt
