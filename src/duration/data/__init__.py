"""The data layer, in the order the data flows: TLC files (download, verify), prepared
months, the feature stage on disk, and a version's reference profile."""
