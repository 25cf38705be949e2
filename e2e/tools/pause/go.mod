// The pod sandbox ("pause") image's only program, built here because base
// images cannot be pulled on the test bed's machines.
module ferrotel.io/tools/pause

go 1.26.0
