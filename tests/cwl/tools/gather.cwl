#!/usr/bin/env cwl-runner
# Gather: concatenate the scattered files, in array order.
cwlVersion: v1.2
class: CommandLineTool
requirements:
  DockerRequirement:
    dockerPull: conveyor/busybox:latest
baseCommand: [cat]
inputs:
  files:
    type: File[]
    inputBinding: {}
stdout: all.txt
outputs:
  all:
    type: stdout
