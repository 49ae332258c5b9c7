#!/usr/bin/env cwl-runner
# Three container steps chaining files: upper-case -> number lines -> count.
cwlVersion: v1.2
class: Workflow
inputs:
  infile: File
outputs:
  upper:
    type: File
    outputSource: upper/upper
  numbered:
    type: File
    outputSource: number/numbered
  count:
    type: File
    outputSource: count/count
steps:
  upper:
    run: tools/upper.cwl
    in:
      infile: infile
    out: [upper]
  number:
    run: tools/number.cwl
    in:
      infile: upper/upper
    out: [numbered]
  count:
    run: tools/count.cwl
    in:
      infile: number/numbered
    out: [count]
