#!/usr/bin/env cwl-runner
# A scatter over an array of words (run with cwltool --parallel: the jobs run side by side),
# then one step that gathers the scattered files.
cwlVersion: v1.2
class: Workflow
requirements:
  ScatterFeatureRequirement: {}
inputs:
  words: string[]
outputs:
  shouted:
    type: File[]
    outputSource: shout/shouted
  all:
    type: File
    outputSource: gather/all
steps:
  shout:
    run: tools/shout.cwl
    scatter: word
    in:
      word: words
    out: [shouted]
  gather:
    run: tools/gather.cwl
    in:
      files: shout/shouted
    out: [all]
