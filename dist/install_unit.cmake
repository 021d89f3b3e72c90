# Run by `cmake --install` (install(SCRIPT) in CMakeLists.txt): writes the
# systemd unit for the install prefix in force and installs it with the
# defaults file it reads. Takes the CHAINFS_* variables set just before.

# Returns in OUT the absolute form of DIR under the install prefix.
function(chainfs_full_dir out dir)
  if(IS_ABSOLUTE "${dir}")
    set(${out} "${dir}" PARENT_SCOPE)
  else()
    set(${out} "${CMAKE_INSTALL_PREFIX}/${dir}" PARENT_SCOPE)
  endif()
endfunction()

chainfs_full_dir(bindir "${CHAINFS_BINDIR}")
chainfs_full_dir(unitdir "${CHAINFS_UNIT_DIR}")
# As GNUInstallDirs: the prefix /usr keeps its configuration in /etc.
if(NOT IS_ABSOLUTE "${CHAINFS_SYSCONFDIR}" AND CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(sysconfdir "/${CHAINFS_SYSCONFDIR}")
else()
  chainfs_full_dir(sysconfdir "${CHAINFS_SYSCONFDIR}")
endif()

set(CHAINFS_DEFAULTS_FILE "${sysconfdir}/default/chainfs")
set(CMAKE_INSTALL_FULL_BINDIR "${bindir}")
configure_file("${CHAINFS_UNIT_TEMPLATE}" "${CHAINFS_UNIT_WORK}" @ONLY)
file(INSTALL DESTINATION "${unitdir}" TYPE FILE FILES "${CHAINFS_UNIT_WORK}")
file(INSTALL DESTINATION "${sysconfdir}/default" TYPE FILE FILES "${CHAINFS_DEFAULTS_SOURCE}")
