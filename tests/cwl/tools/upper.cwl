#!/usr/bin/env cwl-runner
# Workflow step 1: upper-case a file (stdin in, stdout out).
cwlVersion: v1.2
class: CommandLineTool
requirements:
  DockerRequirement:
    dockerPull: conveyor/busybox:latest
baseCommand: [tr, a-z, A-Z]
inputs:
  infile: File
stdin: $(inputs.infile.path)
stdout: upper.txt
outputs:
  upper:
    type: stdout
