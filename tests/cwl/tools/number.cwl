#!/usr/bin/env cwl-runner
# Workflow step 2: number the lines; says what it does on stderr, which is not captured
# (it goes to the container's log: `conveyor logs JOB` shows it).
cwlVersion: v1.2
class: CommandLineTool
requirements:
  DockerRequirement:
    dockerPull: conveyor/busybox:latest
baseCommand: [sh, -c]
arguments:
  - 'echo "numbering step: numbering $(inputs.infile.basename)" >&2; cat -n "$0" > numbered.txt'
  - $(inputs.infile.path)
inputs:
  infile: File
outputs:
  numbered:
    type: File
    outputBinding:
      glob: numbered.txt
