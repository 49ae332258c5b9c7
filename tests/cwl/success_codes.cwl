#!/usr/bin/env cwl-runner
# A non-zero exit code the tool declares a success (successCodes): cwltool succeeds.
cwlVersion: v1.2
class: CommandLineTool
requirements:
  DockerRequirement:
    dockerPull: conveyor/busybox:latest
baseCommand: [sh, -c]
arguments:
  - 'echo "partial result" > result.txt; echo "exiting 3" >&2; exit 3'
inputs: []
successCodes: [0, 3]
outputs:
  result:
    type: File
    outputBinding:
      glob: result.txt
