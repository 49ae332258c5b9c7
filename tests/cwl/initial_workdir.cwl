#!/usr/bin/env cwl-runner
# InitialWorkDirRequirement: a file written into the work dir from `entry`, and an input
# file staged there under a new name; the tool reads both by relative path.
cwlVersion: v1.2
class: CommandLineTool
requirements:
  DockerRequirement:
    dockerPull: conveyor/busybox:latest
  InitialWorkDirRequirement:
    listing:
      - entryname: greeting.txt
        entry: |
          hello $(inputs.name)
          from the initial work dir
      - entryname: staged.txt
        entry: $(inputs.infile)
baseCommand: [sh, -c]
arguments:
  - 'cat greeting.txt; wc -l < staged.txt; ls -1 | sort'
inputs:
  name: string
  infile: File
stdout: out.txt
outputs:
  out:
    type: stdout
  greeting:
    type: File
    outputBinding:
      glob: greeting.txt
