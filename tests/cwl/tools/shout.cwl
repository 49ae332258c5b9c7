#!/usr/bin/env cwl-runner
# Scatter step: upper-case one word into a file named after it.
cwlVersion: v1.2
class: CommandLineTool
requirements:
  DockerRequirement:
    dockerPull: conveyor/busybox:latest
baseCommand: [sh, -c]
arguments:
  - 'echo "$0" | tr a-z A-Z; echo "shouted $0" >&2'
  - $(inputs.word)
inputs:
  word: string
stdout: $(inputs.word).txt
outputs:
  shouted:
    type: stdout
