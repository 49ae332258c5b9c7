#!/usr/bin/env cwl-runner
# Outputs the tool writes into its working directory, collected by glob: files and a directory.
cwlVersion: v1.2
class: CommandLineTool
requirements:
  DockerRequirement:
    dockerPull: conveyor/busybox:latest
baseCommand: [sh, -c]
arguments:
  - >-
    seq 1 "$0" | while read i; do echo "part $i" > "part$i.txt"; done;
    mkdir -p report && cat part*.txt > report/all.txt && wc -l < report/all.txt > report/count.txt
  - $(inputs.parts)
inputs:
  parts: int
outputs:
  parts:
    type: File[]
    outputBinding:
      glob: part*.txt
  report:
    type: Directory
    outputBinding:
      glob: report
