#!/usr/bin/env cwl-runner
# stdin redirection and stdout capture: tr upper-cases the input file fed on stdin.
cwlVersion: v1.2
class: CommandLineTool
requirements:
  DockerRequirement:
    dockerPull: conveyor/busybox:latest
baseCommand: [tr, a-z, A-Z]
inputs:
  infile: File
stdin: $(inputs.infile.path)
stdout: out.txt
outputs:
  out:
    type: stdout
