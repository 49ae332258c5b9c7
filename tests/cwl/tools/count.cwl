#!/usr/bin/env cwl-runner
# Workflow step 3: count lines, words and bytes of a file (fed on stdin).
cwlVersion: v1.2
class: CommandLineTool
requirements:
  DockerRequirement:
    dockerPull: conveyor/busybox:latest
baseCommand: [wc]
inputs:
  infile: File
stdin: $(inputs.infile.path)
stdout: count.txt
outputs:
  count:
    type: stdout
